"""run_node's spin survives rclpy's executor race with entities destroyed on another thread.

A MultiThreadedExecutor raises InvalidHandle out of `spin()` when a callback destroys a
subscription or publisher while the executor builds its wait set (ros2/rclpy#1206): the cloud
node, which destroys a robot's entities when it leaves (`robot_namespaces`, `server_pool`),
ended there. Here a timer churns entities every 5 ms; without the fix spin() ended within about
a second on this machine.
"""
import time

import rclpy
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from std_msgs.msg import String

from cloudseg_ros.ros import spin

CHURN_S = 4.0


class _Done(Exception):
    pass


def test_spin_goes_on_while_callbacks_destroy_entities():
    rclpy.init()
    node = rclpy.create_node('spin_churn')
    entities, started = [], time.monotonic()

    def churn():
        for sub, pub in entities:
            node.destroy_subscription(sub)
            node.destroy_publisher(pub)
        entities[:] = [(node.create_subscription(String, f'churn{i}/in', lambda _: None, 10),
                        node.create_publisher(String, f'churn{i}/out', 10)) for i in range(5)]
        if time.monotonic() - started > CHURN_S:
            raise _Done()
    node.create_timer(0.005, churn, callback_group=MutuallyExclusiveCallbackGroup())
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    try:
        spin._spin_on(executor, node)
        raise AssertionError('spin returned before the churn ended')
    except _Done:
        pass  # the timer's own end, after CHURN_S of churn
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()


def test_an_error_out_of_spin_after_shutdown_ends_quietly_and_before_it_raises():
    """Ctrl-C racing a take: once rclpy is shut down, spin()'s error is not a fault."""
    class RaisingSpinner:
        def spin(self):
            raise RuntimeError('Unable to convert call argument')

    rclpy.init()
    node = rclpy.create_node('spin_after_shutdown')
    try:
        try:
            spin._spin_on(RaisingSpinner(), node)
            raise AssertionError('a RuntimeError while rclpy runs must propagate')
        except RuntimeError as err:
            assert 'convert' in str(err)
        rclpy.shutdown()
        spin._spin_on(RaisingSpinner(), node)  # returns
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
