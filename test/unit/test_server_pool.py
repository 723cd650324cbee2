"""Several servers sharing a fleet (core/server_pool.py): each robot has one server at a time.

Servers run on one simulated clock and exchange heartbeats through `_Net`, which can make a
server deaf or mute; `pool-sim` (tools/pool_sim.py) runs the same logic at fleet size.
"""
import itertools

import pytest

from cloudseg_ros.core.server_pool import Heartbeat, MAX_SERVERS, PoolConfig, ServerPool
from cloudseg_ros.tools.pool_sim import parse_args, simulate

CONFIG = PoolConfig.for_lease(2.0)  # heartbeat 0.25 s, start-up 4 s
ROBOTS = [f'/r{i}' for i in range(12)]


class _Net:
    """Pools ticking every heartbeat period; heartbeats arrive at the next tick."""

    def __init__(self, names, robots=ROBOTS, now=0.0):
        self.now, self.pools, self.deaf, self.mute = now, {}, set(), set()
        self.inbox = []
        for name in names:
            self.start(name, robots)

    def start(self, name, robots=ROBOTS, session='s1'):
        self.pools[name] = ServerPool(name, session, CONFIG, self.now, robots)

    def step(self):
        """Deliver, then every pool updates and announces; check no robot has two servers."""
        for src, beat in self.inbox:
            for name, pool in self.pools.items():
                if name != src and name not in self.deaf:
                    pool.on_heartbeat(beat, self.now)
        self.inbox = []
        for name, pool in self.pools.items():
            pool.update(self.now)
            if name not in self.mute:
                self.inbox.append((name, pool.heartbeat(self.now)))
        for a, b in itertools.combinations(self.pools.values(), 2):
            assert not (a.serving & b.serving), (self.now, a.name, b.name)
        self.now += CONFIG.heartbeat_s

    def run(self, seconds):
        for _ in range(round(seconds / CONFIG.heartbeat_s)):
            self.step()

    def served(self):
        return set().union(*(p.serving for p in self.pools.values()))


def test_every_robot_has_exactly_one_server():
    net = _Net(['/a', '/b', '/c'])
    net.run(CONFIG.startup_s - 0.5)
    assert not net.served()  # start-up hold-off: nobody serves yet
    net.run(2.0)
    assert net.served() == set(ROBOTS)
    assert all(pool.serving for pool in net.pools.values())  # shared, bounded load


def test_a_killed_servers_robots_move_within_the_lease_and_are_never_doubled():
    net = _Net(['/a', '/b'])
    net.run(6.0)
    orphans = net.pools['/a'].serving
    assert orphans and net.served() == set(ROBOTS)
    del net.pools['/a']  # kill -9: no goodbye
    waited = 0.0
    while not orphans <= net.pools['/b'].serving:
        net.step()
        waited += CONFIG.heartbeat_s
        assert waited < 5.0
    assert CONFIG.lease_s <= waited <= CONFIG.lease_s + 2 * CONFIG.heartbeat_s
    assert net.served() == set(ROBOTS)


def test_a_returning_server_takes_robots_back_without_doubling():
    net = _Net(['/a', '/b'])
    net.run(6.0)
    before = {n: p.serving for n, p in net.pools.items()}
    del net.pools['/a']
    net.run(4.0)
    net.start('/a', session='s2')  # a new session: the old acks do not count
    net.run(CONFIG.startup_s + 1.0)
    assert {n: p.serving for n, p in net.pools.items()} == before


def test_a_deaf_server_makes_the_others_stop_rather_than_double_serve():
    """/a stops hearing the others (they still hear it): it will take the whole fleet after one
    lease, so the others must have stopped by then (the fence)."""
    net = _Net(['/a', '/b', '/c'])
    net.run(6.0)
    net.deaf.add('/a')
    net.run(6.0)  # step() asserts no overlap at every tick
    assert net.pools['/a'].serving == set(ROBOTS)
    assert not net.pools['/b'].serving and not net.pools['/c'].serving
    net.deaf.clear()  # healed: shared again, still never doubled
    net.run(4.0)
    assert net.served() == set(ROBOTS) and net.pools['/b'].serving


def test_a_mute_server_stops_before_the_others_take_its_robots():
    net = _Net(['/a', '/b'])
    net.run(6.0)
    net.mute.add('/a')  # /a hears /b, /b no longer hears /a
    net.run(6.0)
    assert net.pools['/b'].serving == set(ROBOTS) and not net.pools['/a'].serving


def test_servers_given_different_fleets_never_agree_and_change_nothing():
    net = _Net(['/a'])
    net.run(6.0)
    net.start('/b', robots=ROBOTS + ['/extra'])
    net.run(8.0)
    assert not net.pools['/b'].serving and net.pools['/a'].serving == set(ROBOTS)
    assert net.pools['/b'].why == 'waiting for agreement'
    report = net.pools['/b'].health('p')
    assert report.level == 1 and report.values[0] == ('servers', '/a /b')
    net.pools['/b'].set_fleet(ROBOTS)  # fixed: the robots are shared
    net.run(2.0)
    assert net.pools['/b'].serving and net.served() == set(ROBOTS)
    assert net.pools['/a'].health('p').level == 0


def test_a_robot_added_to_every_server_gets_one_server_once_all_agree():
    net = _Net(['/a', '/b'])
    net.run(6.0)
    net.pools['/a'].set_fleet(ROBOTS + ['/new'])  # set on one server first (ros2 param set)
    net.run(1.0)
    assert '/new' not in net.served()  # the servers' fleets differ: no gain
    assert net.served() == set(ROBOTS)  # but nobody stops serving either
    net.pools['/b'].set_fleet(ROBOTS + ['/new'])
    net.run(1.0)
    assert net.served() == set(ROBOTS) | {'/new'}


def test_heartbeat_round_trip_and_malformed_ones():
    beat = Heartbeat('/a', 'x1', 7, True, ('/a', '/b'), 'f00', True, {'/b': ('y', 3)})
    assert Heartbeat.from_json(beat.to_json()) == beat
    for bad in ('[]', '{}', '{"server": "/a"}', beat.to_json().replace('7', '-7', 1),
                beat.to_json().replace('"y",3', '"y",true'),
                beat.to_json().replace('"released":true', '"released":1'), 'x' * 70000,
                'not json', '[' * 60000, '{"a":' * 12000):
        with pytest.raises(ValueError):
            Heartbeat.from_json(bad)


def test_a_flood_of_invented_servers_is_bounded():
    pool = ServerPool('/me', 's1', CONFIG, 0.0, ROBOTS)
    for i in range(MAX_SERVERS + 100):
        pool.on_heartbeat(Heartbeat(f'/x{i}', 's', 1, True, (), 'f', False, {}), 0.0)
    assert len(pool.live_peers(0.0)) == MAX_SERVERS
    assert '/x0' in pool.live_peers(0.0) and f'/x{MAX_SERVERS}' not in pool.live_peers(0.0)


def test_timings_that_break_the_fence_are_refused():
    with pytest.raises(ValueError):
        PoolConfig(lease_s=0.5, heartbeat_s=0.25, fence_margin_s=0.25)


def test_pool_sim_fails_over_within_5_s_and_never_serves_a_frame_twice():
    report = simulate(parse_args(['--robots', '120', '--servers', '4', '--kill-at', '12',
                                  '--restart-at', '22', '--end', '30']))
    assert report['frames_served_twice'] == 0
    assert report['killed_server_robots'] > 0 and report['failover_unserved_robots'] == 0
    assert report['failover_s']['max_s'] < 5.0
