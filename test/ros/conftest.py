"""Fixtures for ROS tests: an isolated DDS domain, node processes, and a test node.

Each test session picks its own ROS_DOMAIN_ID and keeps discovery on this host, so parallel
runs and other ROS systems on the network never see each other.
"""
import os
import subprocess
import sys
import time

import pytest

# Before rclpy is imported anywhere: domain ids 1..100 spread by process id.
os.environ['ROS_DOMAIN_ID'] = str(1 + os.getpid() % 100)
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'  # Iron and newer
os.environ['ROS_LOCALHOST_ONLY'] = '1'  # Humble
os.environ.setdefault('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')

import rclpy  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(os.path.dirname(REPO), 'shared', 'data', 'camvid11')


class NodeProcess:
    """One node running in its own process, its output kept in a log file for failures."""

    def __init__(self, module: str, log_dir: str, params=None, namespace: str = '',
                 remaps=None, params_file: str = '') -> None:
        args = [sys.executable, '-m', module, '--ros-args']
        if params_file:
            args += ['--params-file', params_file]
        for name, value in (params or {}).items():
            args += ['-p', f'{name}:={_param_text(value)}']
        if namespace:
            args += ['-r', f'__ns:={namespace}']
        for src, dst in (remaps or {}).items():
            args += ['-r', f'{src}:={dst}']
        self.log_path = os.path.join(log_dir, module.rsplit('.', 1)[-1] + '.log')
        self._log = open(self.log_path, 'w')
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, PYTHONUNBUFFERED='1'))

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.proc.poll() is None

    def log(self) -> str:
        """Everything the node printed so far."""
        self._log.flush()
        with open(self.log_path) as f:
            return f.read()

    def stop(self) -> None:
        """SIGINT, then kill if it does not exit."""
        if self.alive():
            self.proc.send_signal(2)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def _param_text(value) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    return str(value)


@pytest.fixture
def launch(tmp_path):
    """Start node processes; all are stopped at the end of the test."""
    started = []

    def _launch(module, **kwargs):
        node = NodeProcess(module, str(tmp_path), **kwargs)
        started.append(node)
        return node

    yield _launch
    for node in started:
        node.stop()


@pytest.fixture
def ros_node():
    """An rclpy node in the test process."""
    rclpy.init()
    node = rclpy.create_node(f'test_probe_{os.getpid()}')
    yield node
    node.destroy_node()
    rclpy.try_shutdown()


@pytest.fixture
def spin_until(ros_node):
    """spin_until(predicate, timeout_s) -> bool: spin the test node until predicate() holds."""
    def _spin_until(predicate, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            rclpy.spin_once(ros_node, timeout_sec=0.05)
            if predicate():
                return True
        return False
    return _spin_until
