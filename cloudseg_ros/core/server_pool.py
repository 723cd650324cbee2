"""Several cloud servers sharing one fleet: membership, assignment, hand-over (no ROS).

Every server of a pool publishes a small heartbeat on one shared topic (the ROS graph carries
it: DDS discovery, a Fast DDS discovery server or the zenoh router; no broker of ours) and
computes, from the heartbeats it hears, the same robot -> server assignment as every other
server: `core/fleet_assign.assign` (rendezvous hashing with bounded load) over the fleet's robot
names and the live, ready servers' names. A server serves only the robots it owns.

Rules that keep a frame from being served by two servers (docs/SCALING.md):

- **Lease.** A server is live while one of its heartbeats arrived in the last `lease_s`; a
  killed server's robots move to the others when its lease lapses.
- **Start-up.** A new server owns nothing for `startup_s` (it announces itself, not ready, and
  listens), so it knows the other servers before it takes robots from them.
- **Agreement, then release, then gain.** While the live servers' last heartbeats (ready or
  still starting) do not all announce exactly this server's view (same ready servers, same
  fleet), it changes nothing (it only drops robots taken out of the fleet). Once they agree, it
  lets go of the robots it no longer owns and says so in its heartbeats (`released`); it starts
  serving a robot it did not serve only when every live server announces the same view *and*
  has released. A server applies a change before it announces it, so a gain never overlaps the
  previous owner, and servers that disagree (say, given different fleet lists) keep serving
  what they serve.
- **Fence.** Each heartbeat acknowledges the last heartbeat heard from every live server. A
  server serves nothing unless every other live ready server acknowledged one of its heartbeats
  sent less than `lease_s - fence_margin_s` ago: the others declare it lost only `lease_s`
  after hearing it last, so it has stopped before they take its robots, even when it can send
  but no longer hear (one-sided loss). Clocks are each server's own monotonic clock; only their
  rates must agree.

What this cannot prevent: a partition in which both sides still reach the robots but not each
other makes each side serve the whole fleet (no quorum without a third party); a server that
starts deaf (it hears no heartbeat at all) serves the whole fleet from the end of its start-up
hold-off, and the others stop only when they hear it (one heartbeat period of overlap).
"""
from dataclasses import dataclass, field
from functools import lru_cache
import hashlib
import json
from typing import Dict, FrozenSet, Iterable, Sequence, Tuple

from cloudseg_ros.core.fleet_assign import assign
from cloudseg_ros.core.health import OK, StatusReport, WARN

MAX_HEARTBEAT_BYTES = 65536  # a heartbeat names at most a few hundred servers
MAX_SERVERS = 512
MAX_NAME_CHARS = 256


@dataclass(frozen=True)
class PoolConfig:
    """Timing of one pool (all in seconds) and the assignment's slack."""

    lease_s: float = 2.0  # silent this long: a server is lost
    heartbeat_s: float = 0.25  # heartbeat and re-evaluation period
    fence_margin_s: float = 0.25  # stop this long before the others may declare us lost
    startup_s: float = 4.0  # own nothing this long after start (discover the others first)
    slack: float = 0.25  # bounded load: a server takes at most its share x (1 + slack)

    def __post_init__(self) -> None:
        """ValueError when the timings cannot keep the rules above."""
        if self.heartbeat_s <= 0 or self.fence_margin_s <= 0 or self.startup_s < 0:
            raise ValueError('heartbeat_s and fence_margin_s must be > 0, startup_s >= 0')
        if self.lease_s - self.fence_margin_s < 2 * self.heartbeat_s:
            raise ValueError(f'lease_s={self.lease_s} leaves under two heartbeats '
                             f'({self.heartbeat_s} s) after the fence margin')

    @staticmethod
    def for_lease(lease_s: float) -> 'PoolConfig':
        """Heartbeat at lease / 8, fence margin lease / 8, start-up hold-off of two leases."""
        return PoolConfig(lease_s=lease_s, heartbeat_s=lease_s / 8, fence_margin_s=lease_s / 8,
                          startup_s=2 * lease_s)


@dataclass(frozen=True)
class Heartbeat:
    """What a server announces: who it is, its view and what it heard of the others."""

    server: str
    session: str  # random per start: a restarted server is a new member
    seq: int
    ready: bool
    view: Tuple[str, ...]  # the live ready servers its current assignment is computed over
    fleet: str  # digest of the robot list it assigns
    released: bool  # it serves no robot that another server owns in `view`
    acks: Dict[str, Tuple[str, int]] = field(default_factory=dict)  # server -> (session, seq)

    def to_json(self) -> str:
        """Serialise (std_msgs/String payload)."""
        return json.dumps({'server': self.server, 'session': self.session, 'seq': self.seq,
                           'ready': self.ready, 'view': list(self.view), 'fleet': self.fleet,
                           'released': self.released,
                           'acks': {k: list(v) for k, v in self.acks.items()}},
                          separators=(',', ':'))

    @staticmethod
    def from_json(text: str) -> 'Heartbeat':
        """Parse a peer's heartbeat; ValueError for anything malformed or oversized."""
        if len(text) > MAX_HEARTBEAT_BYTES:
            raise ValueError(f'heartbeat of {len(text)} bytes')
        try:
            data = json.loads(text)
        except RecursionError:  # '[[[[...' within the size bound nests past the parser's stack
            raise ValueError('heartbeat nested too deeply') from None
        if not isinstance(data, dict):
            raise ValueError('heartbeat is not an object')
        view, acks = data.get('view'), data.get('acks')
        if not isinstance(view, list) or not isinstance(acks, dict) or \
                len(view) > MAX_SERVERS or len(acks) > MAX_SERVERS:
            raise ValueError('heartbeat view / acks malformed')
        names = [data.get('server'), data.get('session'), data.get('fleet')] + view + list(acks)
        if not all(isinstance(n, str) and 0 < len(n) <= MAX_NAME_CHARS for n in names):
            raise ValueError('heartbeat names malformed')
        parsed_acks = {}
        for name, ack in acks.items():
            if not (isinstance(ack, list) and len(ack) == 2 and isinstance(ack[0], str)
                    and _is_count(ack[1])):
                raise ValueError('heartbeat ack malformed')
            parsed_acks[name] = (ack[0], ack[1])
        if not _is_count(data.get('seq')) or not isinstance(data.get('ready'), bool) or \
                not isinstance(data.get('released'), bool):
            raise ValueError('heartbeat seq / ready / released malformed')
        return Heartbeat(data['server'], data['session'], data['seq'], data['ready'],
                         tuple(view), data['fleet'], data['released'], parsed_acks)


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 63


def fleet_digest(robots: Iterable[str]) -> str:
    """Short digest of a robot list: servers assigning different fleets never agree."""
    text = '\0'.join(sorted(set(robots)))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


@lru_cache(maxsize=64)
def owners(robots: Tuple[str, ...], servers: FrozenSet[str], slack: float) -> Dict[str, str]:
    """{robot: server} for a fleet and a set of servers (cached: views change rarely)."""
    return assign(robots, sorted(servers), slack) if servers else {}


@dataclass
class _Peer:
    heartbeat: Heartbeat
    heard_s: float  # when its last heartbeat arrived (our clock)


class ServerPool:
    """One server's side of the pool: feed it heartbeats and the time, ask what to serve."""

    def __init__(self, name: str, session: str, config: PoolConfig, now_s: float,
                 robots: Sequence[str] = ()) -> None:
        self.name, self.session, self.config = name, session, config
        self._start_s = now_s
        self._peers: Dict[str, _Peer] = {}
        self._sent_s: Dict[int, float] = {}  # own recent heartbeat seq -> when sent
        self._seq = 0
        self.view: FrozenSet[str] = frozenset()
        self.serving: FrozenSet[str] = frozenset()
        self.why = 'starting'  # why the last update served what it did (for the log)
        self.set_fleet(robots)

    def set_fleet(self, robots: Sequence[str]) -> None:
        """The robots the pool shares (every server must be given the same list).

        One assignment: a parameter thread may call this while another updates.
        """
        listed = tuple(sorted(set(robots)))
        self._fleet = (listed, fleet_digest(listed))

    def on_heartbeat(self, heartbeat: Heartbeat, now_s: float) -> None:
        """Record a peer's heartbeat (own ones are ignored; a new session replaces the old)."""
        if heartbeat.server == self.name:
            return
        peer = self._peers.get(heartbeat.server)
        if peer is None and len(self._peers) >= MAX_SERVERS:
            return  # a flood of invented names must not grow this table (pruned per lease)
        if peer is not None and peer.heartbeat.session == heartbeat.session \
                and heartbeat.seq <= peer.heartbeat.seq:
            return  # reordered or repeated
        self._peers[heartbeat.server] = _Peer(heartbeat, now_s)

    def ready(self, now_s: float) -> bool:
        """Past the start-up hold-off."""
        return now_s - self._start_s >= self.config.startup_s

    def live_peers(self, now_s: float) -> Dict[str, Heartbeat]:
        """Peers heard within the lease (forgetting the others)."""
        lease = self.config.lease_s
        self._peers = {n: p for n, p in self._peers.items() if now_s - p.heard_s <= lease}
        return {n: p.heartbeat for n, p in self._peers.items()}

    def update(self, now_s: float) -> FrozenSet[str]:
        """Recompute the view and the robots to serve now."""
        peers = self.live_peers(now_s)
        ready_peers = {n: h for n, h in peers.items() if h.ready}
        me_ready = self.ready(now_s)
        self.view = frozenset(ready_peers) | ({self.name} if me_ready else frozenset())
        if not me_ready:
            self.serving, self.why = frozenset(), 'start-up hold-off'
        elif not self._fenced_in(ready_peers, now_s):
            self.serving, self.why = frozenset(), 'fence: not acknowledged by every server'
        else:
            robots, digest = self._fleet
            assignment = owners(robots, self.view, self.config.slack)
            owned = frozenset(r for r, s in assignment.items() if s == self.name)
            # Not-ready peers too: one becoming ready at this very moment sees a smaller view.
            agreed = all(set(h.view) == self.view and h.fleet == digest
                         for h in peers.values())
            if agreed and all(h.released for h in peers.values()):
                self.serving, self.why = owned, 'agreed'
            elif agreed:
                self.serving, self.why = self.serving & owned, 'releasing'
            else:
                self.serving = self.serving & frozenset(robots)
                self.why = 'waiting for agreement'
        return self.serving

    def _fenced_in(self, ready_peers: Dict[str, Heartbeat], now_s: float) -> bool:
        """Every ready peer acknowledged one of our heartbeats recent enough."""
        horizon = self.config.lease_s - self.config.fence_margin_s
        for heartbeat in ready_peers.values():
            ack = heartbeat.acks.get(self.name)
            if ack is None or ack[0] != self.session:
                return False
            sent_s = self._sent_s.get(ack[1])
            if sent_s is None or now_s - sent_s >= horizon:
                return False
        return True

    def heartbeat(self, now_s: float) -> Heartbeat:
        """The next heartbeat to publish (call after `update`, so it announces what is applied)."""
        self._seq += 1
        self._sent_s[self._seq] = now_s
        horizon = self.config.lease_s
        self._sent_s = {k: t for k, t in self._sent_s.items() if now_s - t <= horizon}
        acks = {n: (p.heartbeat.session, p.heartbeat.seq) for n, p in self._peers.items()}
        robots, digest = self._fleet  # released is judged against the fleet it announces
        assignment = owners(robots, self.view, self.config.slack)
        released = all(assignment.get(r) == self.name for r in self.serving)
        return Heartbeat(self.name, self.session, self._seq, self.ready(now_s),
                         tuple(sorted(self.view)), digest, released, acks)

    def health(self, pool_name: str) -> StatusReport:
        """/diagnostics: WARN while fenced or waiting for agreement (robots may go unserved)."""
        level = OK if self.why in ('agreed', 'releasing', 'start-up hold-off') else WARN
        return StatusReport(f'cloudseg cloud: server pool {pool_name}', self.name, level,
                            self.why, [('servers', ' '.join(sorted(self.view))),
                                       ('robots_served', str(len(self.serving))),
                                       ('fleet_robots', str(len(self._fleet[0])))])
