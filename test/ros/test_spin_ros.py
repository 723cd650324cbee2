"""run_node's clean-up: SIGINT ends a node process promptly, with status 0 and no traceback."""
import signal

import pytest

from cloudseg_ros.ros.param_client import RemoteParams

# Both spin on the default single-threaded executor; SIGINT may come while the node is still
# starting (its services answer before the constructor ends): that must end cleanly too.
NODES = [('cloudseg_ros.nodes.controller_node', 'controller', {}),
         ('cloudseg_ros.nodes.edge_node', 'edge', {})]


@pytest.mark.parametrize('module,name,params', NODES)
def test_sigint_ends_node_cleanly(launch, ros_node, module, name, params):
    node = launch(module, namespace='/sp1', params=params)
    assert RemoteParams(ros_node, f'/sp1/{name}').wait_ready(15.0), node.log()
    node.proc.send_signal(signal.SIGINT)
    assert node.proc.wait(timeout=10.0) == 0, node.log()
    assert 'Traceback' not in node.log(), node.log()


SLOW_NODE = '''
import os, signal, threading, time
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from std_msgs.msg import Empty
from cloudseg_ros.ros.spin import run_node


class Slow(Node):
    """A callback still running (a GPU batch) when SIGINT comes; it publishes at its end."""

    def __init__(self):
        super().__init__('slow')
        self.pub = self.create_publisher(Empty, 'done', 1)
        self.create_timer(0.05, self.work)
        threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()

    def work(self):
        print('callback started', flush=True)
        time.sleep(0.8)
        try:
            self.pub.publish(Empty())
        except Exception:  # rclpy's SIGINT handler has shut the context down: expected
            pass
        # Still this node's: it must not have been destroyed under the running callback.
        print(f'callback finished, node alive: {self.handle is not None}', flush=True)

    def destroy_node(self):
        print('node destroyed', flush=True)
        super().destroy_node()


run_node(Slow, executor=lambda: MultiThreadedExecutor(num_threads=2))
print('clean exit', flush=True)
'''


def test_sigint_during_a_callback_waits_for_it_then_destroys(tmp_path):
    """Multi-threaded executor: the callback in progress ends before the node is destroyed."""
    import subprocess
    import sys
    done = subprocess.run([sys.executable, '-c', SLOW_NODE], capture_output=True, text=True,
                          timeout=30)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert 'Traceback' not in out and 'clean exit' in out, out
    # Every callback ran to its end before the node went (none failed with 'cannot use
    # Destroyable because destruction was requested').
    before = out[:out.index('node destroyed')]
    assert before.count('callback started') == before.count('callback finished') >= 2, out
    assert 'Destroyable' not in out and 'never retrieved' not in out, out
