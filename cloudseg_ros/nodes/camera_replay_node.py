"""Demo camera: publish `image_raw` (sensor_msgs/Image, rgb8) at a fixed rate.

The frames come from a video file, an image folder or a dataset split (CamVid `<split>/`),
optionally looping.

On a robot any camera driver publishing `image_raw` replaces this node. The stamp is the time
the frame is published (its acquisition time for the rest of the pipeline).
"""
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from cloudseg_ros.core.imageops import ImageError
from cloudseg_ros.core.sources import FrameSource, SourceError
from cloudseg_ros.ros import qos
from cloudseg_ros.ros.conversions import rgb_to_image_msg
from cloudseg_ros.ros.guard import CallbackGuard
from cloudseg_ros.ros.spin import run_node
from cloudseg_ros.ros.params import ParamSpec, declare_params

PARAMS = (
    ParamSpec('source', '', 'Video file, image folder or dataset split folder to replay.',
              read_only=True),
    ParamSpec('rate_hz', 15.0, 'Publishing rate, frames per second.', 0.1, 240.0,
              read_only=True),
    ParamSpec('loop', True, 'Start again at the end of the source.', read_only=True),
    ParamSpec('frame_id', 'camera', 'frame_id of the published images.', read_only=True),
)


class CameraReplayNode(Node):
    """Replays frames from disk as a camera would publish them."""

    def __init__(self) -> None:
        super().__init__('camera_replay')
        values = declare_params(self, PARAMS)
        self._frame_id = values['frame_id']
        self._pub = self.create_publisher(Image, 'image_raw', qos.IMAGE)
        self._count = 0
        self._source = None
        try:
            self._source = FrameSource(values['source'], loop=values['loop'])
        except SourceError as err:
            # Keep the node alive (parameters, introspection) but say clearly why nothing flows.
            self.get_logger().error(f'no frames will be published: {err}')
            return
        guard = CallbackGuard(self.get_logger())
        self._timer = self.create_timer(1.0 / values['rate_hz'],
                                        guard.wrap('replay', self._on_timer))
        self.get_logger().info(
            f"replaying '{values['source']}' ({len(self._source)} frames) at "
            f"{values['rate_hz']} Hz, loop={values['loop']}, frame_id '{self._frame_id}'")

    def _on_timer(self) -> None:
        try:
            rgb = self._source.read()
        except SourceError as err:
            self.get_logger().error(str(err), throttle_duration_sec=5.0)
            return
        if rgb is None:
            self.get_logger().info(f'end of source after {self._count} frames')
            self._timer.cancel()
            return
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self._frame_id)
        try:
            self._pub.publish(rgb_to_image_msg(rgb, header))
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
