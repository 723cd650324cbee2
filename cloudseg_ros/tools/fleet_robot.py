"""A synthetic robot for `cloudseg bench-fleet`: pre-encoded frames of a clip at a fixed rate.

Publishes `frames` (EncodedFrame) exactly as an edge node would, from frames encoded once at
start (`core/fleet_clip.py`), so that N of them on one machine load the cloud, not the robots.
Every frame is stamped when it is published (its acquisition time), so the bench reads the
cloud's added latency as mask arrival minus stamp. A `keyframe_request` restarts the clip from
its first frame (an IDR for H.264). On exit it writes how many frames it sent to
`summary_path`, which the bench needs to count frames lost on the way.
"""
import json
import secrets

from rclpy.node import Node
from std_msgs.msg import Empty, Header

from cloudseg_ros.core.fleet_clip import encode_clip
from cloudseg_ros.msg import EncodedFrame
from cloudseg_ros.ros import qos
from cloudseg_ros.ros.clock import steady_clock
from cloudseg_ros.ros.conversions import uint8_field
from cloudseg_ros.ros.params import ParamSpec, declare_params
from cloudseg_ros.ros.spin import run_node

PARAMS = (
    ParamSpec('clip', '', 'Video file or image folder to stream.', read_only=True),
    ParamSpec('width', 480, 'Camera width the clip is resized to, pixels.', 16, 8192,
              read_only=True),
    ParamSpec('height', 360, 'Camera height, pixels.', 16, 8192, read_only=True),
    ParamSpec('scale', 4, 'Uplink downsampling factor.', 1, 4, read_only=True),
    ParamSpec('codec', 'jpeg', 'Uplink codec.', choices=('jpeg', 'h264'), read_only=True),
    ParamSpec('fps', 15.0, 'Frames sent per second.', 0.1, 1000.0, read_only=True),
    ParamSpec('max_clip_frames', 60, 'Frames of the clip encoded at start (then looped).',
              1, 10000, read_only=True),
    ParamSpec('summary_path', '', "Where to write {'sent': N} on exit ('' = nowhere).",
              read_only=True),
)


def _message(frame, index: int, width: int, height: int, scale: int,
             codec: str) -> EncodedFrame:
    msg = EncodedFrame(kind=EncodedFrame.KIND_KEY if frame.keyframe else EncodedFrame.KIND_USEFUL,
                       orig_width=width, orig_height=height, width=frame.width,
                       height=frame.height, scale=scale, codec=codec, keyframe=frame.keyframe)
    msg.header = Header(frame_id=f'fleet_camera_{index}')
    msg.data = uint8_field(frame.data)
    return msg


class FleetRobot(Node):
    """Streams a pre-encoded clip on `frames` at `fps`, looping."""

    def __init__(self) -> None:
        super().__init__('fleet_robot')
        values = declare_params(self, PARAMS)
        frames = encode_clip(values['clip'], (values['width'], values['height']),
                             values['scale'], values['codec'], values['max_clip_frames'])
        # Messages are built once: publishing only stamps and numbers them.
        self._messages = [_message(f, i, values['width'], values['height'], values['scale'],
                                   values['codec']) for i, f in enumerate(frames)]
        self._session_id = secrets.randbits(64) or 1
        self._summary_path = values['summary_path']
        self._next = 0
        self.sent = 0
        self.keyframe_requests = 0
        self._pub = self.create_publisher(EncodedFrame, 'frames', qos.ENCODED_STREAM)
        self.create_subscription(Empty, 'keyframe_request', self._on_keyframe_request,
                                 qos.STATS)
        self.create_timer(1.0 / values['fps'], self._send, clock=steady_clock())
        self.get_logger().info(f"fleet robot: {len(frames)} {values['codec']} frames of "
                               f"{values['width']}x{values['height']} /{values['scale']} at "
                               f"{values['fps']} fps")

    def _on_keyframe_request(self, _msg: Empty) -> None:
        self.keyframe_requests += 1
        self._next = 0

    def _send(self) -> None:
        if self._pub.get_subscription_count() == 0:
            return  # not matched to the cloud yet: a frame now would count as lost
        msg = self._messages[self._next]
        self._next = (self._next + 1) % len(self._messages)
        self.sent += 1
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.session_id = self._session_id
        msg.seq = self.sent
        self._pub.publish(msg)

    def destroy_node(self) -> None:
        """Write the summary (frames sent), then destroy the node."""
        if self._summary_path:
            with open(self._summary_path, 'w') as f:
                json.dump({'sent': self.sent, 'keyframe_requests': self.keyframe_requests}, f)
        super().destroy_node()


def main(args=None) -> None:
    """Run one synthetic robot until shut down."""
    run_node(FleetRobot, args)


if __name__ == '__main__':
    main()
