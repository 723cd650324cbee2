"""Start package nodes as separate processes (what `ros2 run` does), for the demo and tests."""
import os
import signal
import subprocess
import sys
from typing import Dict, Optional

from cloudseg_ros.paths import package_file

PROFILE_VARS = ('FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE')


def robot_dds_env() -> Dict[str, str]:
    """Environment for robot-side processes: the robot's Fast DDS profile, unless one is set.

    config/fastdds_robot.xml carries HD camera images through shared memory and frees sample
    buffers once taken (which needs RMW_FASTRTPS_USE_QOS_FROM_XML=1).
    """
    if any(os.environ.get(name) for name in PROFILE_VARS):
        return {}
    return {'FASTDDS_DEFAULT_PROFILES_FILE': package_file('config', 'fastdds_robot.xml'),
            'RMW_FASTRTPS_USE_QOS_FROM_XML': '1'}


def _param_text(value) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if value == '':
        return "''"  # an empty override must still parse as YAML
    if isinstance(value, (list, tuple)):
        return '[' + ', '.join(f"'{v}'" if isinstance(v, str) else str(v) for v in value) + ']'
    return str(value)


class NodeProcess:
    """One node in its own process; its output goes to a log file, shown when it fails."""

    def __init__(self, module: str, log_dir: str, params: Optional[Dict] = None,
                 namespace: str = '', remaps: Optional[Dict[str, str]] = None,
                 params_file: str = '', env: Optional[Dict[str, str]] = None) -> None:
        args = [sys.executable, '-m', module, '--ros-args']
        if params_file:
            args += ['--params-file', params_file]
        for name, value in (params or {}).items():
            args += ['-p', f'{name}:={_param_text(value)}']
        if namespace:
            args += ['-r', f'__ns:={namespace}']
        for src, dst in (remaps or {}).items():
            args += ['-r', f'{src}:={dst}']
        os.makedirs(log_dir, exist_ok=True)
        self.name = module.rsplit('.', 1)[-1]
        self.log_path = os.path.join(log_dir, self.name + '.log')
        self._log = open(self.log_path, 'w')
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, PYTHONUNBUFFERED='1', **(env or {})))

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.proc.poll() is None

    def log(self) -> str:
        """Everything the node printed so far."""
        self._log.flush()
        with open(self.log_path) as f:
            return f.read()

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGINT (clean rclpy shutdown), then kill if it does not exit in time."""
        if self.alive():
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
