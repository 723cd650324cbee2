"""Run the real `ros2` tools from tests (their environment comes from ros2_tools.py).

Kept apart from ros2_tools.py, whose own bytes key the cache of installed tools.
"""
import subprocess
import time

DISCOVERY_S = 3.0
# Verbs that run without the ros2 daemon (it would outlive the tests) and find nodes themselves.
DAEMONLESS = ('param', 'node', 'lifecycle')


def ros2(env, *args, timeout_s=60.0):
    """Run `ros2 ARGS...`; returns the CompletedProcess (output in .stdout).

    `ros2 param`, `ros2 node` and `ros2 lifecycle` run without the ros2 daemon; their own node
    then needs a few seconds of discovery on a loaded machine.
    """
    if args[0] not in DAEMONLESS:
        return subprocess.run(['ros2', *args], env=env, capture_output=True, text=True,
                              timeout=timeout_s)
    args = (*args, '--no-daemon', '--spin-time', str(DISCOVERY_S))
    deadline = time.monotonic() + timeout_s
    while True:
        result = subprocess.run(['ros2', *args], env=env, capture_output=True, text=True,
                                timeout=timeout_s)
        # Discovery within the spin time is not guaranteed on a loaded machine: ask again.
        if 'Node not found' not in result.stderr or time.monotonic() > deadline:
            return result


def listed_names(env, expected, *args, timeout_s=60.0):
    """`ros2 ARGS` (a list of names), asked again until it lists all of `expected`."""
    deadline = time.monotonic() + timeout_s
    names = set()
    while not expected <= names and time.monotonic() < deadline:
        names = set(ros2(env, *args).stdout.split())
    return names


def node_names(env, expected, timeout_s=60.0):
    """`ros2 node list`, asked again until it lists every name of `expected` (or time is up)."""
    return listed_names(env, expected, 'node', 'list', timeout_s=timeout_s)
