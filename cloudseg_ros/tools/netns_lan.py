"""A LAN on one host: network namespaces joined by a bridge, each one "machine" for DDS.

The first namespace holds a bridge; every other one gets a veth pair into it and an address in
10.206.0.0/24 (the first namespace's bridge is .1, the next .2, ...). Multicast is routed onto
the LAN (DDS discovery uses it) and the bridge floods it (snooping off). Each namespace gets its
own machine id, as in wan_link.py (Fast DDS would otherwise take them for one host). Used by the
server-pool test: two server namespaces and one of robots (test/ros/test_server_pool_ros.py).
Needs root and `ip`; `wan_link.privileges_problem()` says why not.
"""
import os
import shutil
import subprocess
from typing import List, Sequence

from cloudseg_ros.tools.wan_link import (_run, LinkError, NETNS_ETC,
                                         remove_stale_namespaces)

SUBNET = '10.206.0'
PREFIX = 'cs_lan'  # namespaces are cs_lan<index>_<tag>, tag = the creating process's pid


def remove_stale_lans() -> List[str]:
    """Delete cs_lan<i>_<pid> namespaces whose creating process is gone (killed runs)."""
    return remove_stale_namespaces(lambda prefix: prefix.startswith(PREFIX))


class NetnsLan:
    """Namespaces `names` on one bridge; `down()` removes all of it."""

    def __init__(self, names: Sequence[str], tag: str = '') -> None:
        tag = tag or str(os.getpid())
        self.namespaces = {n: f'{PREFIX}{i}_{tag}' for i, n in enumerate(names)}
        self.addresses = {n: f'{SUBNET}.{i + 1}' for i, n in enumerate(names)}
        self._tag = tag
        self._made: List[str] = []

    def __enter__(self) -> 'NetnsLan':
        self.up()
        return self

    def __exit__(self, *_exc) -> None:
        self.down()

    def exec_prefix(self, name: str) -> List[str]:
        """Command prefix running a program in namespace `name` (`ip netns exec` execs it)."""
        return ['ip', 'netns', 'exec', self.namespaces[name]]

    def up(self) -> None:
        """Create namespaces, bridge, veth pairs, addresses and routes; on failure undo, raise."""
        try:
            for ns in self.namespaces.values():
                _run(['ip', 'netns', 'add', ns])
                self._made.append(ns)
                folder = os.path.join(NETNS_ETC, ns)
                os.makedirs(folder, exist_ok=True)
                with open(os.path.join(folder, 'machine-id'), 'w') as stream:
                    stream.write(os.urandom(16).hex() + '\n')
                _run(['ip', '-n', ns, 'link', 'set', 'lo', 'up'])
            names = list(self.namespaces)
            hub = self.namespaces[names[0]]
            _run(['ip', '-n', hub, 'link', 'add', 'br0', 'type', 'bridge'])
            _run(['ip', '-n', hub, 'link', 'set', 'br0', 'type', 'bridge', 'mcast_snooping',
                  '0'])
            self._address(hub, 'br0', names[0])
            for index, name in enumerate(names[1:], 1):
                port = f'csl{index}_{self._tag}'[:15]
                _run(['ip', 'link', 'add', port, 'netns', hub, 'type', 'veth', 'peer', 'name',
                      'eth0', 'netns', self.namespaces[name]])
                _run(['ip', '-n', hub, 'link', 'set', port, 'master', 'br0', 'up'])
                self._address(self.namespaces[name], 'eth0', name)
        except (LinkError, OSError):
            self.down()
            raise

    def _address(self, ns: str, dev: str, name: str) -> None:
        _run(['ip', '-n', ns, 'addr', 'add', f'{self.addresses[name]}/24', 'dev', dev])
        _run(['ip', '-n', ns, 'link', 'set', dev, 'up'])
        _run(['ip', '-n', ns, 'route', 'add', '224.0.0.0/4', 'dev', dev])

    def down(self) -> None:
        """Delete the namespaces (and with them the links) and their /etc/netns folders."""
        for ns in reversed(self._made):
            subprocess.run(['ip', 'netns', 'del', ns], capture_output=True, timeout=15)
            shutil.rmtree(os.path.join(NETNS_ETC, ns), ignore_errors=True)
        self._made.clear()
