"""The `main()` every node shares: init, spin until Ctrl-C or shutdown, clean up.

Clean-up runs in the order that leaves nothing half-alive: the executor is shut down first
(no callback runs any more, a multi-threaded executor's threads have finished theirs), then
the node is destroyed, then rclpy. Destroying a node whose executor still runs a callback in
another thread can end in a traceback from that callback, or a hang at exit.
Works on Humble, Jazzy and Kilted (`try_shutdown`, ExternalShutdownException).
"""
import signal
from typing import Callable, Optional

import rclpy
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
        spinner.spin()
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
