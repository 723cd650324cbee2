"""Recorded `make wan-test` runs replayed through the controller's logic (core/uplink.py).

Each fixture (test/unit/data/wan_*.json.gz, made by cloudseg_ros/tools/wan_trace.py) holds what
the robot's controller saw on a real shaped link, 8 -> 1 -> 4 Mbit/s: frames sent, the cloud's
arrival reports, its queue and inference times, masks back. The replay is open loop (the robot
sent what the live controller chose), so it checks the estimator and the policy on real inputs:
the estimate stays above what arrives, start-up is not a loss, the drop and the rise are
followed, and only the link's share of latency can make the latency guard step down.
"""
import copy
import glob
import gzip
import json
import os
from dataclasses import dataclass
from typing import List, Optional

import pytest

from cloudseg_ros.core.profile import load_profile
from cloudseg_ros.core.uplink import UplinkController

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data')
FIXTURES = sorted(glob.glob(os.path.join(DATA, 'wan_*.json.gz')))
UPDATE_PERIOD_S = 0.5  # the controller's default
WINDOW_S = 1.0
START_UP_S = 10.0  # from the first arrival report


# Replays are deterministic, so every known miss is listed by (test, trace) and marked strict:
# a listed pair that starts passing fails the run (update the table), and every other pair
# asserts for real. Reasons are in docs/WAN.md (4: after middleware arrival stamps; 4b: the
# wan_hog*/wan_idle* traces recorded before, whose callback stamps carried CPU delays).
CALLBACK_STAMPS = ('arrival stamps taken in the callback carried CPU delays that the delay '
                   'gradient reads as overuse (docs/WAN.md 4b)')
KNOWN_MISSES = {
    'test_estimate_is_never_below_what_arrives': (
        ('wan_idle2', 'wan_idle3', 'wan_rx_hog1', 'wan_rx_idle1'),
        'the floor is the robust rate (4-frame dispersion vs 1 s window), which an overuse '
        "cut can take below the last second's arrivals (wan_idle2 at 58.8 s: 263 vs 391)"),
    'test_no_drop_at_start_up': (('wan_hog1', 'wan_hog2'), CALLBACK_STAMPS),
    'test_no_step_down_on_an_unsaturated_link': (
        ('wan_hog1', 'wan_hog2', 'wan_idle1', 'wan_idle2'), CALLBACK_STAMPS),
    'test_rise_to_4_mbit_is_followed': (('wan_hog1',), CALLBACK_STAMPS),
    'test_rise_doubles_the_bitrate': (
        ('wan_hog1', 'wan_hog2', 'wan_idle1', 'wan_rx_hog1'),
        CALLBACK_STAMPS + '; with a CPU hog the starved edge sends less than its entry '
        '(wan_rx_hog1: 2.7 s of x2 q90, not double)'),
}


def traces(test_name: str) -> list:
    """Every fixture as a parameter; the known misses of `test_name` as strict xfails."""
    names, reason = KNOWN_MISSES.get(test_name, ((), ''))
    params = []
    for path in FIXTURES:
        name = os.path.basename(path)
        miss = name.split('.')[0] in names
        params.append(pytest.param(path, id=name, marks=[pytest.mark.xfail(
            reason='known miss: ' + reason, strict=True)] if miss else []))
    return params


def load(path: str) -> dict:
    with gzip.open(path, 'rt') as stream:
        return json.load(stream)


@dataclass
class Tick:
    t: float
    estimate_kbps: float
    arrived_kbps: float  # bytes reported arrived in the last WINDOW_S (robot clock)
    entry_kbps: float
    reason: str


def replay(trace: dict, tmp_path) -> List[Tick]:
    path = str(tmp_path / 'profile.yaml')
    with open(path, 'w') as stream:
        stream.write(trace['profile_yaml'])
    uplink = UplinkController(load_profile(path).front)
    events = sorted(trace['events'], key=lambda e: e[0])
    ticks: List[Tick] = []
    arrived: List[tuple] = []
    next_tick = events[0][0]
    for event in events:
        while next_tick <= event[0]:
            ticks.append(_tick(uplink, next_tick, arrived))
            next_tick += UPDATE_PERIOD_S
        t, kind = event[0], event[1]
        if kind == 'sent':
            uplink.on_sent(t, event[2], event[3])
        elif kind == 'rx':
            uplink.on_arrival(event[2], event[4], event[5], event[3])
            arrived.append((t, event[3]))
        elif kind == 'cloud':
            uplink.on_cloud_timing(event[2], event[3], event[4])
        elif kind == 'mask':
            uplink.on_mask(event[2], (t - event[2] * 1e-9) * 1e3)
    return ticks


def _tick(uplink: UplinkController, now_s: float, arrived: list) -> Tick:
    state = uplink.update(now_s)
    recent = sum(size for t, size in arrived if now_s - WINDOW_S < t <= now_s)
    return Tick(now_s, state.estimate_kbps, recent * 8e-3 / WINDOW_S,
                state.decision.entry.kbps, state.decision.reason)


def phase_starts(trace: dict, drop: bool) -> List[tuple]:
    """(start_s, end_s, new capacity) of every step down (`drop`) or up."""
    phases = trace['phases']
    return [(b[1], b[2], b[0]) for a, b in zip(phases, phases[1:]) if (b[0] < a[0]) == drop]


def first_after(ticks: List[Tick], start_s: float, end_s: float, condition) -> Optional[float]:
    for tick in ticks:
        if start_s <= tick.t < end_s and condition(tick):
            return tick.t - start_s
    return None


def test_fixtures_exist():
    assert len(FIXTURES) >= 2, 'record with cloudseg_ros/tools/wan_trace.py (module docstring)'


@pytest.mark.parametrize('path', FIXTURES, ids=os.path.basename)
def test_estimate_is_never_far_below_what_arrives(path, tmp_path):
    """The floor is the robust delivered rate: never under half of the last second's arrivals."""
    ticks = replay(load(path), tmp_path)
    assert not [(round(k.t, 1), round(k.estimate_kbps), round(k.arrived_kbps)) for k in ticks
                if k.estimate_kbps < 0.5 * k.arrived_kbps]


@pytest.mark.parametrize('path', traces('test_estimate_is_never_below_what_arrives'))
def test_estimate_is_never_below_what_arrives(path, tmp_path):
    """What arrived in the last second is a floor (issue 12: 50 kbit/s while 250 arrived)."""
    trace = load(path)
    ticks = replay(trace, tmp_path)
    drops = phase_starts(trace, drop=True)
    # Right after a capacity drop, the last second of arrivals still holds frames from before
    # it; the estimator's floor (window vs. dispersion rate) follows the new rate instead.
    settled = [k for k in ticks if not any(s <= k.t < s + 2.0 for s, _, _ in drops)]
    below = [(round(k.t, 1), round(k.estimate_kbps), round(k.arrived_kbps)) for k in settled
             if k.estimate_kbps < 0.9 * k.arrived_kbps]
    assert not below


@pytest.mark.parametrize('path', traces('test_no_drop_at_start_up'))
def test_no_drop_at_start_up(path, tmp_path):
    """Frames sent before the cloud's reports flow are not a loss: no cut before the first drop."""
    trace = load(path)
    ticks = replay(trace, tmp_path)
    start_s = min(e[0] for e in trace['events'] if e[1] == 'rx')
    start_up = [k for k in ticks if k.t < start_s + START_UP_S]
    initial = start_up[0].estimate_kbps
    assert min(k.estimate_kbps for k in start_up) >= initial, initial
    assert not [k.reason for k in start_up if 'down to' in k.reason]


@pytest.mark.parametrize('path', traces('test_no_step_down_on_an_unsaturated_link'))
def test_no_step_down_on_an_unsaturated_link(path, tmp_path):
    trace = load(path)
    ticks = replay(trace, tmp_path)
    first_drop_s = phase_starts(trace, drop=True)[0][0]
    assert not [k.reason for k in ticks if k.t < first_drop_s and 'down to' in k.reason]


@pytest.mark.parametrize('path', FIXTURES, ids=os.path.basename)
def test_drop_to_1_mbit_is_followed_within_seconds(path, tmp_path):
    trace = load(path)
    ticks = replay(trace, tmp_path)
    for start_s, end_s, capacity in phase_starts(trace, drop=True):
        fit_s = first_after(ticks, start_s, end_s, lambda k: k.entry_kbps <= capacity)
        assert fit_s is not None and fit_s <= 3.0, (capacity, fit_s)
        # ...and it stays under the new capacity (bar one upgrade probe at a time).
        late = [k for k in ticks if start_s + 5.0 <= k.t < end_s]
        assert sum(k.entry_kbps <= capacity for k in late) >= 0.8 * len(late)


@pytest.mark.parametrize('path', traces('test_rise_to_4_mbit_is_followed'))
def test_rise_to_4_mbit_is_followed(path, tmp_path):
    trace = load(path)
    ticks = replay(trace, tmp_path)
    for start_s, end_s, capacity in phase_starts(trace, drop=False):
        before = max(k.entry_kbps for k in ticks if start_s - 1.0 <= k.t < start_s)
        up_s = first_after(ticks, start_s, end_s, lambda k: k.entry_kbps > before)
        assert up_s is not None and up_s <= 15.0, (before, up_s)


@pytest.mark.parametrize('path', traces('test_rise_doubles_the_bitrate'))
def test_rise_doubles_the_bitrate(path, tmp_path):
    trace = load(path)
    ticks = replay(trace, tmp_path)
    for start_s, end_s, capacity in phase_starts(trace, drop=False):
        before = max(k.entry_kbps for k in ticks if start_s - 1.0 <= k.t < start_s)
        assert max(k.entry_kbps for k in ticks if start_s <= k.t < end_s) >= 2 * before


def _with_slow_cloud(trace: dict, extra_ms: float, reported: bool) -> dict:
    """Every mask `extra_ms` later; the cloud reports the time as inference when `reported`."""
    slowed = copy.deepcopy(trace)
    for event in slowed['events']:
        if event[1] == 'mask':
            event[0] += extra_ms * 1e-3
        elif event[1] == 'cloud' and reported:
            event[4] += extra_ms
    return slowed


@pytest.mark.parametrize('path', FIXTURES, ids=os.path.basename)
def test_latency_guard_ignores_inference_time(path, tmp_path):
    """Issue 12: 'latency 864 ms > 400 ms' on an idle link while the CPU was busy inferring."""
    trace = load(path)
    as_recorded = replay(trace, tmp_path)
    ticks = replay(_with_slow_cloud(trace, 800.0, reported=True), tmp_path)
    # No more latency steps than the link itself caused (a run may have had some after a drop).
    assert (sum(k.reason.startswith('latency') for k in ticks)
            <= sum(k.reason.startswith('latency') for k in as_recorded))
    # The same delay not explained by the cloud is the link's: the guard steps down.
    # (Not checked on the CPU-hog runs: their robot sat at the cheapest entry, nothing to step.)
    if 'hog' not in os.path.basename(path):
        ticks = replay(_with_slow_cloud(trace, 800.0, reported=False), tmp_path)
        assert [k.reason for k in ticks if k.reason.startswith('latency')]


@pytest.mark.parametrize('path', FIXTURES, ids=os.path.basename)
def test_recorded_run_latency_guard_quiet_on_an_unsaturated_link(path, tmp_path):
    """At 8 Mbit/s (CPU hog included) latency never stepped down: the link was not the cause.

    After a drop it may: a growing link latency is what the guard is for.
    """
    trace = load(path)
    ticks = replay(trace, tmp_path)
    first_drop_s = phase_starts(trace, drop=True)[0][0]
    assert not [k.reason for k in ticks if k.t < first_drop_s and k.reason.startswith('latency')]
