"""A WAN on one host: two network namespaces joined by a veth pair with a token-bucket uplink.

The robot namespace's end of the pair is shaped with `tc tbf` (the uplink, whose rate
`set_rate_kbit` steps); the cloud's end is not (the downlink only carries masks and statistics,
a few kbit/s). The kernel here has no netem, so there is no added delay or random loss: the
bottleneck queue (tbf `latency`) and its tail drops are the whole impairment.

Two details make the link behave like two machines rather than one:

- Both ends drop IPv4 multicast (htb root, multicast filtered into a class whose queue holds
  nothing), as a WAN does. DDS discovery that silently relied on multicast fails here, not in
  the field.
- Each namespace gets its own `/etc/netns/<ns>/machine-id`, which `ip netns exec` mounts over
  `/etc/machine-id`. Fast DDS takes participants with the same machine id for the same host and
  then addressed the other namespace's participant at 127.0.0.1 (seen with strace), so discovery
  across the namespaces never completed.

Needs root, `ip` and `tc`; `privileges_problem()` says why not, without changing anything.
"""
import json
import os
import shutil
import subprocess
import uuid
from typing import Callable, Dict, List, Sequence

ROBOT_IP = '10.203.0.1'
CLOUD_IP = '10.203.0.2'
PREFIX_LEN = 30  # a private point-to-point /30 that exists only inside our namespaces
TBF_BURST = '32kbit'
TBF_LATENCY = '400ms'  # bottleneck buffer: what the queue may hold, in time at the current rate
NETNS_ETC = '/etc/netns'
_UNSHAPED = '10gbit'  # htb classes must have a rate; this one never limits


class LinkError(RuntimeError):
    """A command that builds or changes the link failed (its stderr is the message)."""


def _run(args: Sequence[str]) -> str:
    """Run one ip/tc command; LinkError with the command and its stderr if it fails."""
    try:
        result = subprocess.run(list(args), capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise LinkError(f"{' '.join(args)}: {err}") from None
    if result.returncode != 0:
        raise LinkError(f"{' '.join(args)}: {result.stderr.strip() or result.returncode}")
    return result.stdout


def privileges_problem() -> str:
    """Return '' when this process may build the link, else the reason it may not."""
    if not hasattr(os, 'geteuid') or os.geteuid() != 0:
        return 'not root'
    missing = [tool for tool in ('ip', 'tc') if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not found"
    try:
        _run(['ip', 'netns', 'list'])
    except LinkError as err:
        return f'ip netns does not work: {err}'
    return ''


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_namespaces(is_ours: Callable[[str], bool] = lambda prefix: prefix in (
        'cs_robot', 'cs_cloud')) -> List[str]:
    """Delete <prefix>_<pid> namespaces (cs_robot / cs_cloud by default) left by runs whose
    process is gone; `is_ours(prefix)` says which prefixes belong to the caller.

    A run killed with SIGKILL cannot clean up; its pid in the name tells whether it still runs,
    so namespaces of live runs (a concurrent test) are never touched.
    """
    removed = []
    for line in _run(['ip', 'netns', 'list']).splitlines():
        name = line.split()[0] if line.strip() else ''
        prefix, _, tag = name.rpartition('_')
        if not is_ours(prefix) or not tag.isdigit() or _pid_alive(int(tag)):
            continue
        subprocess.run(['ip', 'netns', 'del', name], capture_output=True, timeout=15)
        shutil.rmtree(os.path.join(NETNS_ETC, name), ignore_errors=True)
        removed.append(name)
    return removed


class WanLink:
    """The namespaces, the veth pair and the qdiscs of one run; `down()` removes all of it."""

    def __init__(self, tag: str, rate_kbit: int) -> None:
        self.robot_ns = f'cs_robot_{tag}'
        self.cloud_ns = f'cs_cloud_{tag}'
        self.robot_dev = f'csr{tag}'  # interface names are limited to 15 characters
        self.cloud_dev = f'csc{tag}'
        self.rate_kbit = int(rate_kbit)
        self._namespaces: List[str] = []
        self._made_netns_etc = False

    def __enter__(self) -> 'WanLink':
        self.up()
        return self

    def __exit__(self, *_exc) -> None:
        self.down()

    def exec_prefix(self, side: str) -> List[str]:
        """Command prefix that runs a program in the 'robot' or 'cloud' namespace."""
        return ['ip', 'netns', 'exec', self.robot_ns if side == 'robot' else self.cloud_ns]

    def up(self) -> None:
        """Create namespaces, veth pair, addresses and qdiscs; on failure undo and raise."""
        try:
            for ns in (self.robot_ns, self.cloud_ns):
                _run(['ip', 'netns', 'add', ns])
                self._namespaces.append(ns)
                self._write_machine_id(ns)
                _run(['ip', '-n', ns, 'link', 'set', 'lo', 'up'])
            # Created directly inside the namespaces: no interface ever appears on the host.
            _run(['ip', 'link', 'add', self.robot_dev, 'netns', self.robot_ns, 'type', 'veth',
                  'peer', 'name', self.cloud_dev, 'netns', self.cloud_ns])
            for ns, dev, address in ((self.robot_ns, self.robot_dev, ROBOT_IP),
                                     (self.cloud_ns, self.cloud_dev, CLOUD_IP)):
                _run(['ip', '-n', ns, 'addr', 'add', f'{address}/{PREFIX_LEN}', 'dev', dev])
                _run(['ip', '-n', ns, 'link', 'set', dev, 'up'])
                self._drop_multicast(ns, dev)
            _run(self._tbf('add', self.rate_kbit))
        except LinkError:
            self.down()
            raise

    def _write_machine_id(self, ns: str) -> None:
        """Give the namespace its own machine id (module docstring: Fast DDS host detection)."""
        self._made_netns_etc = self._made_netns_etc or not os.path.isdir(NETNS_ETC)
        folder = os.path.join(NETNS_ETC, ns)
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, 'machine-id'), 'w') as stream:
            stream.write(uuid.uuid4().hex + '\n')

    def _drop_multicast(self, ns: str, dev: str) -> None:
        """Root htb: class 1:10 carries everything (tbf goes under it), 1:20 drops multicast."""
        tc = ['tc', '-n', ns]
        _run(tc + ['qdisc', 'add', 'dev', dev, 'root', 'handle', '1:', 'htb', 'default', '10'])
        for classid in ('1:10', '1:20'):
            _run(tc + ['class', 'add', 'dev', dev, 'parent', '1:', 'classid', classid, 'htb',
                       'rate', _UNSHAPED, 'quantum', '60000'])
        # pfifo with room for 0 packets drops whatever is classified into it.
        _run(tc + ['qdisc', 'add', 'dev', dev, 'parent', '1:20', 'handle', '20:', 'pfifo',
                   'limit', '0'])
        _run(tc + ['filter', 'add', 'dev', dev, 'parent', '1:', 'protocol', 'ip', 'prio', '1',
                   'u32', 'match', 'ip', 'dst', '224.0.0.0/4', 'flowid', '1:20'])

    def _tbf(self, verb: str, rate_kbit: int) -> List[str]:
        return ['tc', '-n', self.robot_ns, 'qdisc', verb, 'dev', self.robot_dev, 'parent',
                '1:10', 'handle', '10:', 'tbf', 'rate', f'{int(rate_kbit)}kbit',
                'burst', TBF_BURST, 'latency', TBF_LATENCY]

    def set_rate_kbit(self, rate_kbit: int) -> None:
        """Change the uplink rate now (the queued packets stay)."""
        _run(self._tbf('change', rate_kbit))
        self.rate_kbit = int(rate_kbit)

    def set_outage(self, cut: bool) -> None:
        """Cut (True) or restore (False) the link both ways, as a dropped WAN connection.

        A second filter sends every IPv4 packet into class 1:20, whose zero-length queue drops
        it (the multicast filter's mechanism); packets already queued in the tbf still drain.
        """
        for ns, dev in ((self.robot_ns, self.robot_dev), (self.cloud_ns, self.cloud_dev)):
            filters = ['tc', '-n', ns, 'filter']
            if cut:
                _run(filters + ['add', 'dev', dev, 'parent', '1:', 'protocol', 'ip', 'prio', '2',
                                'u32', 'match', 'u32', '0', '0', 'flowid', '1:20'])
            else:
                _run(filters + ['del', 'dev', dev, 'parent', '1:', 'protocol', 'ip', 'prio',
                                '2'])

    def _qdisc_counters(self, ns: str, dev: str, kind: str) -> Dict[str, int]:
        """Bytes, packets and drops so far of the `kind` qdisc on `dev` (tc -s), {} if none."""
        try:
            qdiscs = json.loads(_run(['tc', '-s', '-j', '-n', ns, 'qdisc', 'show', 'dev', dev]))
        except (LinkError, ValueError):
            return {}
        for qdisc in qdiscs:
            if qdisc.get('kind') == kind:
                return {key: int(qdisc.get(key, 0)) for key in ('bytes', 'packets', 'drops')}
        return {}

    def uplink_counters(self) -> Dict[str, int]:
        """Bytes, packets and drops of the uplink's tbf so far, {} if unreadable."""
        return self._qdisc_counters(self.robot_ns, self.robot_dev, 'tbf')

    def multicast_drops(self) -> Dict[str, int]:
        """Multicast packets each side tried to send across the link (all dropped)."""
        return {side: self._qdisc_counters(ns, dev, 'pfifo').get('drops', 0)
                for side, ns, dev in (('robot', self.robot_ns, self.robot_dev),
                                      ('cloud', self.cloud_ns, self.cloud_dev))}

    def down(self) -> None:
        """Delete the namespaces (which deletes the veth pair) and their /etc/netns folders.

        Idempotent and never raises: it runs in `finally` blocks. Processes still running in a
        namespace keep it alive until they exit, so stop them first.
        """
        for ns in reversed(self._namespaces):
            subprocess.run(['ip', 'netns', 'del', ns], capture_output=True, timeout=15)
            shutil.rmtree(os.path.join(NETNS_ETC, ns), ignore_errors=True)
        self._namespaces.clear()
        if self._made_netns_etc:
            try:
                os.rmdir(NETNS_ETC)  # only if empty: another run may be using it
            except OSError:
                pass
            self._made_netns_etc = False
