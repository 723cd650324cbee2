"""The real ROS 2 command-line and launch tools for tests: from a ROS install, or ../shared/ros2.

The PyPI Kilted wheels have no `ros2`, `launch` or `launch_ros`. A ROS install has them; else
this installs the upstream sources of ../shared/ros2 (test tools only, never part of the
package) once into a git-ignored cache folder (`.venv/ros2_tools`, rebuilt when the sources
change): the pure-Python packages with `pip install --target`, `composition_interfaces` (which
launch_ros imports) with CMake + rosidl into a prefix of its own, and a `ros2` launcher.

Run as a script it installs them and prints the environment to use them from a shell:
`eval "$(.venv/bin/python test/ros/ros2_tools.py)"`.
"""
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from typing import Dict, Optional, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED_ROS2 = os.path.join(os.path.dirname(REPO), 'shared', 'ros2')
CACHE = os.path.join(REPO, '.venv', 'ros2_tools')
DROP_MISSING_INCLUDES = os.path.join(REPO, 'cmake', 'drop_missing_include_dirs.cmake')
PURE_PYTHON = ('launch', 'launch_xml', 'launch_yaml', 'launch_ros', 'ros2launch', 'ros2cli',
               'ros2param', 'ros2topic', 'ros2node', 'ros2service', 'ros2run', 'ros2pkg',
               'ros2interface', 'ros2lifecycle', 'rosidl_runtime_py')
ROS2_LAUNCHER = '''#!{python}
"""ros2 (ros2cli from ../shared/ros2, installed by test/ros/ros2_tools.py)."""
import sys

from ros2cli.cli import main

sys.exit(main())
'''


def _system_tools() -> Optional[Dict[str, str]]:
    """The environment as it is when a ROS install provides `ros2` and launch_ros."""
    ros2 = shutil.which('ros2')
    if ros2 is None or ros2.startswith(CACHE):
        return None
    probe = subprocess.run([sys.executable, '-c', 'import launch_ros, ros2cli'],
                           capture_output=True)
    return dict(os.environ) if probe.returncode == 0 else None


def _sources_digest() -> str:
    """Changes when a file of ../shared/ros2 (of the packages used here) or this helper does."""
    digest = hashlib.sha256(open(__file__, 'rb').read())
    for name in sorted(PURE_PYTHON + ('composition_interfaces',)):
        for root, dirs, files in os.walk(os.path.join(SHARED_ROS2, name)):
            dirs[:] = sorted(d for d in dirs if d not in ('build', '__pycache__')
                             and not d.endswith('.egg-info'))
            for f in sorted(files):
                path = os.path.join(root, f)
                digest.update(path.encode() + str(os.path.getsize(path)).encode())
    return digest.hexdigest()


def _run(args, log, **kwargs) -> None:
    result = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **kwargs)
    log.write(' '.join(args) + '\n' + result.stdout)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:4])} ... failed:\n{result.stdout[-3000:]}")


def _venv_prefix() -> str:
    return sys.prefix


def _install(cache: str) -> None:
    """Install the shared sources into `cache` (a fresh folder)."""
    os.makedirs(cache)
    with open(os.path.join(cache, 'install.log'), 'w') as log, \
            tempfile.TemporaryDirectory() as tmp:
        # ../shared is read-only in CI and pip builds in the source folder: build from a copy.
        copies = []
        for name in PURE_PYTHON:
            copies.append(shutil.copytree(
                os.path.join(SHARED_ROS2, name), os.path.join(tmp, name),
                ignore=shutil.ignore_patterns('build', '*.egg-info', '__pycache__')))
        _run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--no-build-isolation',
              '--target', os.path.join(cache, 'python'), *copies], log)
        build = os.path.join(tmp, 'build')
        os.makedirs(build)
        env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep
                   + os.environ.get('PATH', ''), AMENT_PREFIX_PATH=_venv_prefix())
        _run(['cmake', os.path.join(SHARED_ROS2, 'composition_interfaces'),
              '-DBUILD_TESTING=OFF', f'-DCMAKE_PREFIX_PATH={_venv_prefix()}',
              f"-DCMAKE_INSTALL_PREFIX={os.path.join(cache, 'prefix')}",
              f'-DPython3_EXECUTABLE={sys.executable}',
              f'-DCMAKE_PROJECT_INCLUDE={DROP_MISSING_INCLUDES}'],
             log, cwd=build, env=env)
        _run(['cmake', '--build', build, '--target', 'install', '--', f'-j{os.cpu_count() or 1}'],
             log, env=env)
    os.makedirs(os.path.join(cache, 'bin'))
    launcher = os.path.join(cache, 'bin', 'ros2')
    with open(launcher, 'w') as f:
        f.write(ROS2_LAUNCHER.format(python=sys.executable))
    os.chmod(launcher, 0o755)


def _cache_env(cache: str) -> Dict[str, str]:
    """This environment plus the cached tools (launcher, Python packages, interfaces prefix)."""
    prefix = os.path.join(cache, 'prefix')
    site = os.path.relpath(sysconfig.get_paths()['purelib'], sys.prefix)
    env = dict(os.environ)

    def prepend(name, *paths):
        env[name] = os.pathsep.join([*paths, *filter(None, [env.get(name)])])
    prepend('PATH', os.path.join(cache, 'bin'), os.path.dirname(sys.executable))
    prepend('PYTHONPATH', os.path.join(cache, 'python'), os.path.join(prefix, site))
    prepend('AMENT_PREFIX_PATH', prefix, _venv_prefix())
    return env


def ros2_tools_env(cache: str = CACHE) -> Tuple[Optional[Dict[str, str]], str]:
    """(environment in which `ros2` and launch work, '') or (None, why not).

    A ROS install's own tools win; else the ../shared/ros2 sources are installed into `cache`
    (once per change of the sources; several minutes on a loaded 2-core machine).
    """
    system = _system_tools()
    if system is not None:
        return system, ''
    if not os.path.isdir(SHARED_ROS2):
        return None, f'no ROS 2 install (ros2 + launch_ros) and no tool sources at {SHARED_ROS2}'
    stamp = os.path.join(cache, 'stamp')
    digest = _sources_digest()
    if not (os.path.isfile(stamp) and open(stamp).read() == digest):
        shutil.rmtree(cache, ignore_errors=True)
        _install(cache)
        with open(stamp, 'w') as f:
            f.write(digest)
    return _cache_env(cache), ''


if __name__ == '__main__':
    tools_env, why_not = ros2_tools_env()
    if tools_env is None:
        sys.exit(why_not)
    for var in ('PATH', 'PYTHONPATH', 'AMENT_PREFIX_PATH'):
        print(f"export {var}='{tools_env[var]}'")
