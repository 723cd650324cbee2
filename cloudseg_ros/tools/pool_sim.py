"""`cloudseg pool-sim`: several cloud servers sharing a fleet, simulated frame by frame.

Runs `core/server_pool.py` (the logic the cloud node runs with `server_pool` set) for every
server on one simulated clock: heartbeats cross a bus with a random delay, robots send frames
at --fps, and a frame counts as served by each server that serves its robot at that moment
(and has done so for --match-s, the time the robot's publisher needs to match a new
subscription). One server is killed at --kill-at and comes back (a new session) at
--restart-at. Reported: frames served twice (must be 0), the time until each of the killed
server's robots gets a mask again (target 5 s), the longest gap of the other robots, robots
moved, and the cost of one assignment. Pure computation: no ROS, no GPU. Not modelled: frames
already inside a server's pipeline when it lets a robot go (the node drops them), message loss.
"""
import argparse
import heapq
import json
import random
import time
from typing import Dict, List, Optional

from cloudseg_ros.core.server_pool import owners, PoolConfig, ServerPool


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog='cloudseg pool-sim', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--robots', type=int, default=1000)
    parser.add_argument('--servers', type=int, default=11)
    parser.add_argument('--fps', type=float, default=15.0, help='frames/s per robot')
    parser.add_argument('--lease-s', type=float, default=2.0, help='server_pool_lease_s')
    parser.add_argument('--delay-s', type=float, default=0.05,
                        help='heartbeat delivery delay, uniform in [0, this]')
    parser.add_argument('--match-s', type=float, default=0.2,
                        help='a gained robot is served this long after the server takes it')
    parser.add_argument('--kill-at', type=float, default=15.0, help='s: server 0 killed')
    parser.add_argument('--restart-at', type=float, default=30.0, help='s: server 0 back')
    parser.add_argument('--end', type=float, default=45.0, help='s: end of the simulation')
    parser.add_argument('--start-spread-s', type=float, default=1.0,
                        help='servers start at random times within this')
    parser.add_argument('--seed', type=int, default=1)
    parser.add_argument('--json', default='', help='also write the report here')
    return parser.parse_args(argv)


class _Sim:
    """Servers, the heartbeat bus and who serves which robot since when."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.config = PoolConfig.for_lease(args.lease_s)
        self.robots = [f'/robot{i}' for i in range(args.robots)]
        self.names = [f'/cloud_{k}' for k in range(args.servers)]
        self.pools: Dict[str, ServerPool] = {}
        self.next_tick: Dict[str, float] = {}
        self.starts = {n: self.rng.uniform(0, args.start_spread_s) for n in self.names}
        self.bus = []  # heap of (deliver at, order, destination, heartbeat)
        self.order = 0
        self.served_by: Dict[str, Dict[str, float]] = {r: {} for r in self.robots}

    def start(self, name: str, now: float, session: str) -> None:
        self.pools[name] = ServerPool(name, session, self.config, now, self.robots)
        self.next_tick[name] = now

    def kill(self, name: str) -> None:
        pool = self.pools.pop(name)
        del self.next_tick[name]
        for robot in pool.serving:
            del self.served_by[robot][name]

    def tick(self, name: str, now: float) -> None:
        pool = self.pools[name]
        before = pool.serving
        after = pool.update(now)
        for robot in before - after:
            del self.served_by[robot][name]
        for robot in after - before:
            self.served_by[robot][name] = now + self.args.match_s
        beat = pool.heartbeat(now)
        for dest in self.pools:
            if dest != name:
                self.order += 1
                heapq.heappush(self.bus, (now + self.rng.uniform(0, self.args.delay_s),
                                          self.order, dest, beat))
        self.next_tick[name] = now + self.config.heartbeat_s

    def deliver(self, now: float) -> None:
        while self.bus and self.bus[0][0] <= now:
            _, _, dest, beat = heapq.heappop(self.bus)
            if dest in self.pools:
                self.pools[dest].on_heartbeat(beat, now)

    def owner_map(self) -> Dict[str, str]:
        """{robot: its server}, robots with exactly one server only."""
        return {r: next(iter(by)) for r, by in self.served_by.items() if len(by) == 1}

    def servers_of(self, robot: str, now: float) -> int:
        return sum(1 for since in self.served_by[robot].values() if since <= now)


def _moved(before: Dict[str, str], after: Dict[str, str]) -> int:
    return sum(1 for r, server in after.items() if before.get(r) != server)


def _window_stats(gaps: Dict[str, float]) -> Dict:
    values = sorted(gaps.values()) or [0.0]
    return {'robots': len(gaps), 'max_s': round(values[-1], 3),
            'p50_s': round(values[len(values) // 2], 3)}


def simulate(args: argparse.Namespace) -> Dict:
    """Run the timeline; return the report."""
    sim = _Sim(args)
    victim = sim.names[0]
    dt, now, killed, restarted = 0.005, 0.0, False, False
    period = 1.0 / args.fps
    next_frame = {r: sim.rng.uniform(0, period) for r in sim.robots}
    last_served = {r: None for r in sim.robots}
    frames = served = twice = 0
    orphans, orphan_wait, gaps_kill, gaps_restart = set(), {}, {}, {}
    started = set()
    warm_s = args.start_spread_s + sim.config.startup_s + 2 * args.lease_s
    while now < args.end:
        for name in [n for n in sim.names if n not in started and sim.starts[n] <= now]:
            sim.start(name, now, 'first')
            started.add(name)
        if not killed and now >= args.kill_at:
            orphans = {r for r, by in sim.served_by.items() if victim in by}
            owners_up = sim.owner_map()
            sim.kill(victim)
            killed = True
        if killed and not restarted and now >= args.restart_at:
            owners_down = sim.owner_map()
            sim.start(victim, now, 'second')
            restarted = True
        sim.deliver(now)
        for name in list(sim.pools):
            if sim.next_tick[name] <= now:
                sim.tick(name, now)
        for robot in sim.robots:
            if next_frame[robot] > now:
                continue
            next_frame[robot] += period
            count = sim.servers_of(robot, now)
            frames += now >= warm_s
            served += count > 0 and now >= warm_s
            twice += count > 1
            if count == 0 or now < warm_s:
                continue
            previous = last_served[robot]
            if killed and robot in orphans and robot not in orphan_wait:
                orphan_wait[robot] = now - args.kill_at
            elif previous is not None:
                window = gaps_restart if restarted else gaps_kill if killed else None
                if window is not None:
                    window[robot] = max(window.get(robot, 0.0), now - previous)
            last_served[robot] = now
        now += dt
    for robot in orphans:
        gaps_kill.pop(robot, None)
    all_up = frozenset(sim.names)
    owners.cache_clear()
    start = time.perf_counter()
    owners(tuple(sorted(sim.robots)), all_up, sim.config.slack)
    assign_ms = (time.perf_counter() - start) * 1e3
    return {
        'config': vars(args),
        'pool': {'lease_s': sim.config.lease_s, 'heartbeat_s': sim.config.heartbeat_s,
                 'fence_margin_s': sim.config.fence_margin_s,
                 'startup_s': sim.config.startup_s},
        'frames_after_start_up': frames, 'frames_served': served,
        'frames_served_twice': twice,
        'killed_server_robots': len(orphans),
        'failover_s': _window_stats(orphan_wait),
        'failover_unserved_robots': len(orphans) - len(orphan_wait),
        'other_robots_gap_during_failover_s': _window_stats(gaps_kill),
        'gap_after_restart_s': _window_stats(gaps_restart),
        'robots_moved_by_the_loss': _moved(owners_up, owners_down),
        'robots_moved_back': _moved(owners_down, sim.owner_map()),
        'same_owners_after_restart': sim.owner_map() == owners_up,
        'assign_ms': round(assign_ms, 1),
    }


def main(argv: Optional[List[str]] = None) -> int:
    """Run the simulation and print (and write) the report."""
    report = simulate(parse_args(argv))
    print(json.dumps(report, indent=1))
    if report['config']['json']:
        with open(report['config']['json'], 'w') as f:
            json.dump(report, f, indent=1)
    return 0 if report['frames_served_twice'] == 0 else 1
