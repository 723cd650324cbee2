"""The `main()` every node shares: init, spin until Ctrl-C or shutdown, clean up.

Works on Humble, Jazzy and Kilted (`try_shutdown`, ExternalShutdownException).
"""
import signal
from typing import Callable, Optional

import rclpy
from rclpy.executors import Executor, ExternalShutdownException
from rclpy.node import Node


def run_node(make_node: Callable[[], Node], args=None,
             executor: Optional[Callable[[], Executor]] = None) -> None:
    """Create the node after rclpy.init() and spin it (on `executor()` if given)."""
    rclpy.init(args=args)
    node = make_node()
    spinner = executor() if executor is not None else None
    try:
        if spinner is None:
            rclpy.spin(node)
        else:
            spinner.add_node(node)
            spinner.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # Ctrl-C on `ros2 launch` reaches a node twice (the terminal's process group, then
        # launch's own SIGINT): a second one during clean-up would only print a traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        node.destroy_node()
        rclpy.try_shutdown()
