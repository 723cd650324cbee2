"""The `main()` every node shares: init, spin until Ctrl-C or shutdown, clean up.

Clean-up runs in the order that leaves nothing half-alive: the executor is shut down first
(no callback runs any more, a multi-threaded executor's threads have finished theirs), then
the node is destroyed, then rclpy. Destroying a node whose executor still runs a callback in
another thread can end in a traceback from that callback, or a hang at exit.
Works on Humble, Jazzy and Kilted (`try_shutdown`, ExternalShutdownException).

A MultiThreadedExecutor that builds its wait set while a callback on another thread destroys a
subscription or publisher (robots leaving the cloud: `robot_namespaces`, `server_pool`) can
raise InvalidHandle out of `spin()` (ros2/rclpy#1142, #1206, open): the cloud ended there when
a returning pool server took its robots back. The wait set is rebuilt on the next turn, so
`run_node` spins on, unless the node itself is gone. Any error out of `spin()` once rclpy is
shut down (Ctrl-C arriving while a message is taken) ends the spin quietly.
"""
import signal
from typing import Callable, Optional

import rclpy
from rclpy.exceptions import InvalidHandle
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

# Longest wait at exit for callbacks in progress (a GPU batch is far shorter).
EXECUTOR_SHUTDOWN_TIMEOUT_S = 5.0


def run_node(make_node: Callable[[], Node], args=None,
             executor: Optional[Callable[[], Executor]] = None) -> None:
    """Create the node after rclpy.init() and spin it (on `executor()` if given)."""
    rclpy.init(args=args)
    node = spinner = None
    try:
        node = make_node()  # Ctrl-C while it starts (loading networks) ends it cleanly too
        spinner = executor() if executor is not None else SingleThreadedExecutor()
        spinner.add_node(node)
        _spin_on(spinner, node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # Ctrl-C on `ros2 launch` reaches a node twice (the terminal's process group, then
        # launch's own SIGINT): a second one during clean-up would only print a traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if spinner is not None:
            spinner.shutdown(timeout_sec=EXECUTOR_SHUTDOWN_TIMEOUT_S)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


def _spin_on(spinner: Executor, node: Node) -> None:
    """`spinner.spin()`, resumed after the executor's race with a destroyed entity."""
    while True:
        try:
            spinner.spin()
            return
        except RuntimeError as err:
            if not rclpy.ok():
                # Ctrl-C shut rclpy down while the executor took a message: a take racing the
                # shutdown (seen as pybind11's 'Unable to convert call argument'), not a fault.
                return
            if not isinstance(err, InvalidHandle):
                raise
            with node.handle:  # raises InvalidHandle (out of here) if the node is gone
                pass
            node.get_logger().warn(f'executor: {err} (an entity destroyed while the wait set '
                                   'was built, ros2/rclpy#1206): spinning on',
                                   throttle_duration_sec=10.0)
