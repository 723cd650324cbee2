"""A camera process for tests: publishes `count` rgb8 images of width x height at rate_hz.

Run as a node (`python -m hd_camera --ros-args -p width:=1920 ...`, with test/ros on
PYTHONPATH). The images are built once (a few moving gradients) so the publishing loop costs
only the publish itself; the stamp is the publish time. At the end it prints
`published N in T s` and stays up for `linger_s` so best-effort readers can take the last ones.
"""
import time

import numpy as np
import rclpy
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from cloudseg_ros.ros import qos

FRAMES = 4  # distinct images, cycled


def _frames(width: int, height: int, frames: int):
    xx = np.arange(width, dtype=np.uint8)[None, :]
    yy = np.arange(height, dtype=np.uint8)[:, None]
    for t in range(frames):
        img = np.empty((height, width, 3), np.uint8)  # uint8 arithmetic wraps: no temporaries
        img[:, :, 0] = xx + np.uint8(37 * t % 256)
        img[:, :, 1] = yy + np.uint8(23 * t % 256)
        img[:, :, 2] = xx + yy
        msg = Image(width=width, height=height, encoding='rgb8', is_bigendian=0,
                    step=width * 3)
        msg.data = img.tobytes()
        yield msg


def main() -> None:
    """Publish, report, linger."""
    rclpy.init()
    node = Node('hd_camera')
    width = node.declare_parameter('width', 1920).value
    height = node.declare_parameter('height', 1080).value
    rate_hz = node.declare_parameter('rate_hz', 30.0).value
    count = node.declare_parameter('count', 90).value
    start_delay_s = node.declare_parameter('start_delay_s', 3.0).value
    linger_s = node.declare_parameter('linger_s', 2.0).value
    pub = node.create_publisher(Image, 'image_raw', qos.SENSOR)
    frames = node.declare_parameter('frames', FRAMES).value
    msgs = list(_frames(width, height, frames))
    deadline = time.monotonic() + start_delay_s
    while time.monotonic() < deadline:  # discovery, and the edge's subscription matching
        rclpy.spin_once(node, timeout_sec=0.05)
    start = time.monotonic()
    for i in range(count):
        next_s = start + i / rate_hz
        time.sleep(max(0.0, next_s - time.monotonic()))
        msg = msgs[i % len(msgs)]
        msg.header = Header(stamp=node.get_clock().now().to_msg(), frame_id='hd')
        pub.publish(msg)
    elapsed_s = time.monotonic() - start
    print(f'published {count} in {elapsed_s:.2f} s', flush=True)
    time.sleep(linger_s)
    node.destroy_node()
    rclpy.try_shutdown()


if __name__ == '__main__':
    main()
