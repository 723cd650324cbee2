"""Demo camera: publish `image_raw` (sensor_msgs/Image, rgb8) from a recording.

The frames come from a video file, an image folder or a dataset split (CamVid `<split>/`),
played at `rate_hz`, or from a rosbag2 MCAP file or folder (one Image or CompressedImage
topic, `topic`), played at the recorded pace times `rate`; both optionally loop.

On a robot any camera driver publishing `image_raw` replaces this node. A video frame is stamped
when it is published (its acquisition time for the rest of the pipeline); a bag frame keeps its
recorded header stamp and frame_id unless `recorded_stamps` is false (then it is stamped now,
so that end-to-end latencies measured against this clock mean something).
"""
import time

from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from cloudseg_ros.core.imageops import ImageError
from cloudseg_ros.core.playback import Pacer
from cloudseg_ros.core.sources import SourceError, open_source
from cloudseg_ros.ros import qos
from cloudseg_ros.ros.conversions import rgb_to_image_msg
from cloudseg_ros.ros.guard import CallbackGuard
from cloudseg_ros.ros.spin import run_node
from cloudseg_ros.ros.params import ParamSpec, declare_params

PARAMS = (
    ParamSpec('source', '', 'Video file, image folder, dataset split folder, or rosbag2 MCAP '
              'file or folder to replay.', read_only=True),
    ParamSpec('rate_hz', 15.0, 'Publishing rate of videos and image folders, frames per '
              'second (bags play at their recorded pace, see rate).', 0.1, 240.0,
              read_only=True),
    ParamSpec('rate', 1.0, 'Bags: playback speed as a multiple of the recorded pace '
              '(unitless, 2.0 = twice as fast).', 0.01, 100.0, read_only=True),
    ParamSpec('topic', '', "Bags: the Image or CompressedImage topic to play ('' = the bag's "
              'only image topic).', read_only=True),
    ParamSpec('recorded_stamps', True, "Bags: keep each frame's recorded header stamp (false: "
              'stamp it when published).', read_only=True),
    ParamSpec('loop', True, 'Start again at the end of the source.', read_only=True),
    ParamSpec('frame_id', 'camera', 'frame_id of the published images (bag frames keep their '
              'recorded one when they have it).', read_only=True),
)
# How often a bag player checks whether the next recorded frame is due, seconds: the jitter
# it adds to the recorded pace.
BAG_TICK_S = 0.005
_NOT_DUE = object()  # _next(): a bag frame is waiting for its time


class CameraReplayNode(Node):
    """Replays frames from disk as a camera would publish them."""

    def __init__(self) -> None:
        super().__init__('camera_replay')
        values = declare_params(self, PARAMS)
        self._frame_id = values['frame_id']
        self._recorded_stamps = values['recorded_stamps']
        self._pub = self.create_publisher(Image, 'image_raw', qos.IMAGE)
        self._count = 0
        self._source = None
        try:
            self._source = open_source(values['source'], loop=values['loop'],
                                       topic=values['topic'])
        except SourceError as err:
            # Keep the node alive (parameters, introspection) but say clearly why nothing flows.
            self.get_logger().error(f'no frames will be published: {err}')
            return
        guard = CallbackGuard(self.get_logger())
        self._bag = hasattr(self._source, 'read_frame')
        if self._bag:
            self._pacer = Pacer(values['rate'])
            self._pending = None  # (due_s, BagFrame) read but not yet published
            pace = f"the recorded pace x{values['rate']:g}, topic '{self._source.topic}'"
        else:
            pace = f"{values['rate_hz']} Hz"
        period_s = BAG_TICK_S if self._bag else 1.0 / values['rate_hz']
        self._timer = self.create_timer(period_s, guard.wrap('replay', self._on_timer))
        self.get_logger().info(
            f"replaying '{values['source']}' ({len(self._source)} frames) at {pace}, "
            f"loop={values['loop']}, frame_id '{self._frame_id}'")

    def _next(self):
        """(rgb, stamp, frame_id) to publish now, _NOT_DUE, or None at the end of the source."""
        now = self.get_clock().now()
        if not self._bag:
            rgb = self._source.read()
            return None if rgb is None else (rgb, now.to_msg(), self._frame_id)
        if self._pending is None:
            frame = self._source.read_frame()
            if frame is None:
                return None
            self._pending = (self._pacer.due_s(frame.log_time_ns, time.monotonic()), frame)
        due_s, frame = self._pending
        if time.monotonic() < due_s:
            return _NOT_DUE
        self._pending = None
        stamp = now.to_msg()
        if self._recorded_stamps:
            stamp.sec, stamp.nanosec = divmod(frame.stamp_ns, 1_000_000_000)
        return frame.rgb, stamp, frame.frame_id or self._frame_id

    def _on_timer(self) -> None:
        try:
            item = self._next()
        except SourceError as err:
            self.get_logger().error(str(err), throttle_duration_sec=5.0)
            return
        if item is _NOT_DUE:
            return  # a bag frame not due yet
        if item is None:
            self.get_logger().info(f'end of source after {self._count} frames')
            self._timer.cancel()
            return
        rgb, stamp, frame_id = item
        try:
            self._pub.publish(rgb_to_image_msg(rgb, Header(stamp=stamp, frame_id=frame_id)))
        except ImageError as err:
            self.get_logger().error(f'frame not published: {err}', throttle_duration_sec=5.0)
            return
        self._count += 1
        if self._source.skipped:
            self.get_logger().warn(f'{self._source.skipped} unreadable frames skipped so far',
                                   throttle_duration_sec=10.0)


def main(args=None) -> None:
    """Run the replay camera until shut down."""
    run_node(CameraReplayNode, args)


if __name__ == '__main__':
    main()
