"""A node that watches one robot's stream and reports what a user cares about, once a second.

Subscribes `<ns>/edge_stats`, `<ns>/cloud_stats` and `<ns>/mask_color`; keeps per-second
figures (frames sent / analysed, uplink kbit/s, end-to-end latency = mask arrival here minus
the acquisition stamp) and the overlay frames for a video.
"""
import math
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import Image

from cloudseg_ros.msg import PipelineStats
from cloudseg_ros.ros import qos
from cloudseg_ros.ros.conversions import image_msg_to_rgb, stamp_to_s


@dataclass
class Second:
    """Figures of one second of streaming."""

    t_s: float
    sent: int = 0
    analysed: int = 0
    uplink_bytes: int = 0
    latencies_ms: List[float] = field(default_factory=list)
    cloud_ms: List[float] = field(default_factory=list)
    probe_agreement: List[float] = field(default_factory=list)

    def line(self) -> str:
        """One human-readable progress line."""
        lat = np.array(self.latencies_ms) if self.latencies_ms else None
        lat_text = (f'{np.median(lat):6.0f} ms (max {lat.max():.0f})' if lat is not None
                    else '     - ms')
        cloud = f'{np.mean(self.cloud_ms):5.0f} ms' if self.cloud_ms else '    - ms'
        text = (f't={self.t_s:5.1f}s  sent {self.sent:3d} fps  analysed {self.analysed:3d} fps'
                f'  uplink {self.uplink_bytes * 8 / 1000:7.1f} kbit/s  e2e latency {lat_text}'
                f'  cloud {cloud}/frame')
        if self.probe_agreement:
            text += f'  probe agreement-mIoU {np.mean(self.probe_agreement):.3f}'
        return text


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
        t_s = self._now_s() - self._start_s
        if not self.seconds or t_s - self.seconds[-1].t_s >= 1.0:
            self.seconds.append(Second(t_s=math.floor(t_s)))
        return self.seconds[-1]

    def _on_edge(self, msg: PipelineStats) -> None:
        second = self.current()
        second.sent += 1
        second.uplink_bytes += msg.frame_bytes
        self.last_edge = msg

    def _on_cloud(self, msg: PipelineStats) -> None:
        if msg.stage != 'cloud':
            return  # arrival records ('cloud_rx') are for the bandwidth estimator
        second = self.current()
        if not math.isnan(msg.probe_agreement_miou):
            second.probe_agreement.append(msg.probe_agreement_miou)
            return
        second.analysed += 1
        second.cloud_ms.append(msg.total_ms)
        second.latencies_ms.append((self._now_s() - stamp_to_s(msg.header.stamp)) * 1e3)
        self.last_cloud = msg

    def _on_overlay(self, msg: Image) -> None:
        if self._keep_frames:
            self.frames.append(image_msg_to_rgb(msg))
