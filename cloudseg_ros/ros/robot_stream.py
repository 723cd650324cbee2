"""Per-robot state of the cloud node: receiver, publishers, rate limit, recent masks.

A stream is created when its robot joins (`robot_namespaces`, live) and destroyed when it
leaves; `destroy()` removes its subscription and publishers from the node.
"""
from collections import OrderedDict

from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Empty

from cloudseg_ros.core.health import CloudStreamHealth
from cloudseg_ros.core.rate_limit import TokenBucket
from cloudseg_ros.core.receiver import ReceiveLimits, StreamReceiver
from cloudseg_ros.msg import EncodedFrame, PipelineStats
from cloudseg_ros.ros import qos

RECENT_MASKS = 16  # masks kept per robot to pair a probe with its LR frame


class RobotStream:
    """Everything the node keeps per robot: receiver, publishers, recent masks."""

    def __init__(self, node: Node, namespace: str, group, limits: ReceiveLimits,
                 key_request_hz: float, publisher_events=None) -> None:
        """`publisher_events`: rclpy event callbacks of its publishers; None: none at all
        (`qos.fleet_publisher_events`), as the cloud runs them."""
        prefix = namespace.rstrip('/') + '/' if namespace else ''
        self.name = namespace or node.get_namespace()
        self.receiver = StreamReceiver(limits)
        self.recent_masks = OrderedDict()  # acquisition stamp (ns) -> mask
        self.recent_frames = OrderedDict()  # acquisition stamp (ns) -> DecodedFrame
        self.key_requests = TokenBucket(key_request_hz)
        self.health = CloudStreamHealth(self.name)  # /diagnostics
        events = publisher_events or qos.fleet_publisher_events()

        def publisher(msg_type, topic, profile):
            return node.create_publisher(msg_type, prefix + topic, profile,
                                         event_callbacks=events)

        self.mask_pub = publisher(Image, 'mask', qos.IMAGE)
        self.color_pub = publisher(Image, 'mask_color', qos.IMAGE)
        self.png_pub = publisher(CompressedImage, 'mask/compressed', qos.IMAGE)
        self.stats_pub = publisher(PipelineStats, 'cloud_stats', qos.STATS)
        self.key_pub = publisher(Empty, 'keyframe_request', qos.STATS)
        self.sub = node.create_subscription(
            EncodedFrame, prefix + 'frames',
            node.guard.wrap(f'{self.name}: frame',
                            lambda msg, info: node.on_frame(self, msg, info),
                            on_error=self._count_rejected),
            qos.ENCODED_STREAM, callback_group=group)

    def _count_rejected(self) -> None:
        self.receiver.count_rejected()

    def destroy(self, node: Node) -> None:
        """Remove this robot's subscription and publishers from the node (it left)."""
        node.destroy_subscription(self.sub)
        for pub in (self.mask_pub, self.color_pub, self.png_pub, self.stats_pub, self.key_pub):
            node.destroy_publisher(pub)

    def remember(self, table: OrderedDict, stamp_ns: int, item) -> None:
        """Keep a recent frame or mask (bounded) to pair probes with their LR twin."""
        table[stamp_ns] = item
        while len(table) > RECENT_MASKS:
            table.popitem(last=False)
