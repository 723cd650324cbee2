"""A node that watches one robot's stream and reports what a user cares about, once a second.

Subscribes `<ns>/edge_stats`, `<ns>/cloud_stats` and `<ns>/mask_color`; keeps per-second
figures (frames sent / analysed, uplink kbit/s, end-to-end latency = mask arrival here minus
the acquisition stamp) and the overlay frames for a video.
"""
from typing import List, Optional

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import Image

from cloudseg_ros.core.stream_figures import Second, count_cloud, count_edge, second_at
from cloudseg_ros.msg import PipelineStats
from cloudseg_ros.ros import qos
from cloudseg_ros.ros.conversions import image_msg_to_rgb


class StreamMonitor(Node):
    """Collects per-second figures and overlay frames of one robot namespace."""

    def __init__(self, namespace: str, keep_frames: bool = True) -> None:
        super().__init__('stream_monitor', namespace=namespace)
        self.seconds: List[Second] = []
        self.frames: List[np.ndarray] = []
        self.last_edge: Optional[PipelineStats] = None
        self.last_cloud: Optional[PipelineStats] = None
        self._keep_frames = keep_frames
        self._start_s = self._now_s()
        self.create_subscription(PipelineStats, 'edge_stats', self._on_edge, qos.STATS)
        self.create_subscription(PipelineStats, 'cloud_stats', self._on_cloud, qos.STATS)
        self.create_subscription(Image, 'mask_color', self._on_overlay, qos.IMAGE)

    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def restart_clock(self) -> None:
        """Count seconds from now (after start-up), forgetting what came before."""
        self._start_s = self._now_s()
        self.seconds.clear()

    def current(self) -> Second:
        """Return the Second being filled now (a new one each wall-clock second)."""
        return second_at(self.seconds, self._now_s() - self._start_s)

    def _on_edge(self, msg: PipelineStats) -> None:
        count_edge(self.current(), msg)
        self.last_edge = msg

    def _on_cloud(self, msg: PipelineStats) -> None:
        if msg.stage != 'cloud':
            return  # arrival records ('cloud_rx') are for the bandwidth estimator
        if count_cloud(self.current(), msg, self._now_s()):
            self.last_cloud = msg

    def _on_overlay(self, msg: Image) -> None:
        if self._keep_frames:
            self.frames.append(image_msg_to_rgb(msg))
