"""Robots for the server-pool test in network namespaces, as one process.

`python pool_robots.py OUT_DIR /p0 /p1 ...` (test/ros on PYTHONPATH): each robot is
test_cloud_fleet_ros.FakeRobot sending a frame every 50 ms; every mask's acquisition stamp and
arrival (monotonic s, the host's clock) is kept. Writes OUT_DIR/ready once every robot has a
mask, stops when OUT_DIR/stop appears, then writes OUT_DIR/masks.json: {robot: [[stamp_ns,
arrival_s], ...]}.
"""
import json
import os
import sys
import time

import rclpy
from sensor_msgs.msg import Image

from cloudseg_ros.ros import qos
from test_cloud_fleet_ros import FakeRobot


def main(out_dir: str, robots) -> None:
    """Send and collect until told to stop."""
    rclpy.init()
    node = rclpy.create_node('pool_robots')
    masks = {r: [] for r in robots}

    def keep(robot, msg):
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        masks[robot].append((stamp, time.monotonic()))
    for robot in robots:
        node.create_subscription(Image, f'{robot}/mask', lambda m, r=robot: keep(r, m),
                                 qos.SENSOR)
    senders = [FakeRobot(node, r) for r in robots]
    ready = os.path.join(out_dir, 'ready')
    while not os.path.exists(os.path.join(out_dir, 'stop')):
        for sender in senders:
            sender.send()
        deadline = time.monotonic() + 0.05
        while time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.01)
        if all(masks.values()) and not os.path.exists(ready):
            open(ready, 'w').close()
    with open(os.path.join(out_dir, 'masks.json'), 'w') as f:
        json.dump(masks, f)
    node.destroy_node()
    rclpy.try_shutdown()


if __name__ == '__main__':
    main(sys.argv[1], sys.argv[2:])
