"""Fixtures for ROS tests: an isolated DDS domain, node processes, and a test node.

Each test session picks its own ROS_DOMAIN_ID and keeps discovery on this host, so parallel
runs and other ROS systems on the network never see each other.
"""
import os
import time

import pytest

# Before rclpy is imported anywhere: domain ids 1..100 spread by process id.
os.environ['ROS_DOMAIN_ID'] = str(1 + os.getpid() % 100)
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'  # Iron and newer
os.environ['ROS_LOCALHOST_ONLY'] = '1'  # Humble
os.environ.setdefault('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')

import numpy as np  # noqa: E402
import rclpy  # noqa: E402

from cloudseg_ros.tools.processes import NodeProcess  # noqa: E402
from ros2_tools import ros2_tools_env  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(os.path.dirname(REPO), 'shared', 'data', 'camvid11')


@pytest.fixture
def launch(tmp_path):
    """Start node processes; all are stopped at the end of the test.

    Logs go to tmp_path/<module>.log; give two processes of one module their own `log_dir`.
    """
    started = []

    def _launch(module, log_dir=None, **kwargs):
        node = NodeProcess(module, str(log_dir or tmp_path), **kwargs)
        started.append(node)
        return node

    yield _launch
    for node in started:
        node.stop()


@pytest.fixture
def ros_node():
    """Yield an rclpy node in the test process."""
    rclpy.init()
    node = rclpy.create_node(f'test_probe_{os.getpid()}')
    yield node
    node.destroy_node()
    rclpy.try_shutdown()


@pytest.fixture
def spin_until(ros_node):
    """Return `fn(predicate, timeout_s) -> bool` spinning the test node until predicate() holds."""
    def _spin_until(predicate, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            rclpy.spin_once(ros_node, timeout_sec=0.05)
            if predicate():
                return True
        return False
    return _spin_until


@pytest.fixture(scope='session')
def ros2_env():
    """Environment with `ros2` and launch (a ROS install's, or ../shared/ros2's, cached)."""
    env, why_not = ros2_tools_env()
    if env is None:
        pytest.skip(why_not)
    return env


def collect(node, topic, msg_type, qos_profile):
    """Subscribe `node` to `topic`; return the list the received messages are appended to."""
    received = []
    node.create_subscription(msg_type, topic, received.append, qos_profile)
    return received


def moving_scene(t: int, width: int = 480, height: int = 360) -> np.ndarray:
    """A moving synthetic RGB scene, different every frame `t`."""
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.stack([(xx + 7 * t) % 256, (yy + 3 * t) % 256, (xx + yy) % 256], axis=2)
    return img.astype(np.uint8)


class SceneCamera:
    """A test camera: moving 480x360 rgb8 scenes on `<namespace>/image_raw`, stamps kept."""

    def __init__(self, node, namespace: str) -> None:
        from sensor_msgs.msg import Image
        from cloudseg_ros.ros import qos
        self._node = node
        self._pub = node.create_publisher(Image, f'{namespace}/image_raw', qos.SENSOR)
        self.sent = set()  # (sec, nanosec) of every published frame
        self.count = 0

    def publish(self) -> None:
        """Publish the next scene stamped now."""
        from sensor_msgs.msg import Image
        from std_msgs.msg import Header
        self.count += 1
        stamp = self._node.get_clock().now().to_msg()
        self.sent.add((stamp.sec, stamp.nanosec))
        msg = Image(header=Header(stamp=stamp, frame_id='cam'), width=480, height=360,
                    encoding='rgb8', step=480 * 3)
        msg.data = moving_scene(self.count).tobytes()
        self._pub.publish(msg)
