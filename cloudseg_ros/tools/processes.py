"""Start package nodes as separate processes (what `ros2 run` does), for the demo and tests."""
import os
import signal
import subprocess
import sys
from typing import Dict, List, Optional

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


def param_text(value) -> str:
    """A parameter value as `--ros-args -p name:=VALUE` reads it (YAML)."""
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if value == '':
        return "''"  # an empty override must still parse as YAML
    if isinstance(value, (list, tuple)):
        return '[' + ', '.join(f"'{v}'" if isinstance(v, str) else str(v) for v in value) + ']'
    return str(value)


class LoggedProcess:
    """One command in a process; its output goes to a log file, shown when it fails.

    With `own_group` the command gets its own process group, so that `stop()` also ends what it
    started (`ros2 launch` starts the nodes as its children) if it does not exit on SIGINT in
    time. Without it, a Ctrl-C in the terminal reaches the process directly, as for `cloudseg
    demo`'s nodes.
    """

    def __init__(self, args: List[str], log_dir: str, name: str,
                 env: Optional[Dict[str, str]] = None, base_env: Optional[Dict] = None,
                 own_group: bool = True) -> None:
        """Start `args`; `env` is added to `base_env` (default: this process's environment)."""
        os.makedirs(log_dir, exist_ok=True)
        self.name = name
        self.log_path = os.path.join(log_dir, name + '.log')
        self._log = open(self.log_path, 'w')
        full_env = dict(os.environ if base_env is None else base_env)
        full_env.update(PYTHONUNBUFFERED='1', **(env or {}))
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=full_env, start_new_session=own_group)
        self._own_group = own_group

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.proc.poll() is None

    def log(self) -> str:
        """Everything the process printed so far (also after `stop()`)."""
        if not self._log.closed:
            self._log.flush()
        with open(self.log_path, errors='replace') as f:
            return f.read()

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGINT (clean rclpy / launch shutdown), then kill its process group if still there."""
        if self.alive():
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                pass
        if self._own_group:
            try:
                # Children that outlived their parent (a launch killed in its shutdown) go too.
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        elif self.alive():
            self.proc.kill()
        self.proc.wait()
        self._log.close()


def node_args(module: str, params: Optional[Dict] = None, namespace: str = '',
              remaps: Optional[Dict[str, str]] = None, params_file: str = '') -> List[str]:
    """`python -m module --ros-args ...` with parameters, a namespace and remappings."""
    args = [sys.executable, '-m', module, '--ros-args']
    if params_file:
        args += ['--params-file', params_file]
    for name, value in (params or {}).items():
        args += ['-p', f'{name}:={param_text(value)}']
    if namespace:
        args += ['-r', f'__ns:={namespace}']
    for src, dst in (remaps or {}).items():
        args += ['-r', f'{src}:={dst}']
    return args


class NodeProcess(LoggedProcess):
    """One package node in its own process (what `ros2 run` does)."""

    def __init__(self, module: str, log_dir: str, params: Optional[Dict] = None,
                 namespace: str = '', remaps: Optional[Dict[str, str]] = None,
                 params_file: str = '', env: Optional[Dict[str, str]] = None) -> None:
        super().__init__(node_args(module, params, namespace, remaps, params_file), log_dir,
                         module.rsplit('.', 1)[-1], env, own_group=False)
