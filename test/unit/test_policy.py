"""Controller policy on scripted inputs: bandwidth, latency and live-accuracy traces.

Closed-loop tests (policy + estimator + simulated link) are in test_bandwidth.py.
"""
import math
import random
from typing import Callable, List, Optional

import pytest

from cloudseg_ros.core.policy import Decision, LatencyTracker, Policy, PolicyConfig
from cloudseg_ros.core.profile import ProfileEntry, StreamConfig

DT_S = 0.1  # the node would call update() at ~10 Hz


def entry(scale: int, quality: int, kbps: float, accuracy: float) -> ProfileEntry:
    return ProfileEntry(StreamConfig(scale, 'jpeg', quality, 15.0, 0.03), kbps, accuracy)


# Budget = 0.8 x estimate; an upgrade needs 0.9 x budget = 0.72 x estimate.
FRONT = [entry(4, 50, 300.0, 0.60), entry(4, 70, 500.0, 0.68), entry(3, 70, 800.0, 0.74),
         entry(2, 60, 1200.0, 0.80), entry(1, 50, 3000.0, 0.90)]


def kbps_of(decision: Decision) -> float:
    return decision.entry.kbps


def drive(policy: Policy, start_s: float, end_s: float, bandwidth: Callable[[float], float],
          latency: Optional[Callable[[float], float]] = None,
          accuracy: Optional[Callable[[float], Optional[float]]] = None) -> List[Decision]:
    """Call update() every DT_S from start_s (inclusive) to end_s (exclusive)."""
    decisions = []
    for step in range(round((end_s - start_s) / DT_S)):
        t = start_s + step * DT_S
        decisions.append(policy.update(t, bandwidth(t), latency and latency(t),
                                       accuracy and accuracy(t)))
    return decisions


def const(value):
    return lambda t: value


# ------------------------------------------------------------------------ bandwidth rules
def test_initial_choice_is_the_best_entry_that_fits():
    decision = Policy(FRONT).update(0.0, 1100.0)  # budget 880 kbps
    assert decision.changed and kbps_of(decision) == 800.0
    assert decision.budget_kbps == pytest.approx(880.0)
    assert decision.reason.startswith('initial: x3-jpeg-q70')


def test_cheapest_entry_when_nothing_fits():
    decision = Policy(FRONT).update(0.0, 100.0)
    assert kbps_of(decision) == 300.0
    assert 'nothing fits' in decision.reason


def test_collapse_drops_straight_to_the_best_fit():
    policy = Policy(FRONT)
    assert kbps_of(policy.update(0.0, 5000.0)) == 3000.0
    # 700 kbps < 3000 kbps sent: an emergency, so even min_switch_interval_s does not delay it.
    decision = policy.update(0.1, 700.0)
    assert decision.changed and kbps_of(decision) == 500.0
    assert decision.reason == ('bandwidth 700 kbps < 3750 kbps needed: '
                               'down to x4-jpeg-q70-15hz-u0.03-k0.2')


def test_mild_shortfall_respects_min_switch_interval():
    policy = Policy(FRONT)
    assert kbps_of(policy.update(0.0, 1700.0)) == 1200.0
    held = policy.update(0.5, 1400.0)  # budget 1120 < 1200 kbps, but the link still carries it
    assert not held.changed and held.reason.endswith('min switch interval')
    assert kbps_of(policy.update(1.0, 1400.0)) == 800.0


def test_downgrade_can_be_made_to_wait():
    policy = Policy(FRONT, PolicyConfig(downgrade_immediately=False))
    policy.update(0.0, 1700.0)
    decisions = drive(policy, 5.0, 9.0, const(1400.0))
    changed = [d for d in decisions if d.changed]
    assert len(changed) == 1 and kbps_of(changed[0]) == 800.0
    assert decisions.index(changed[0]) * DT_S == pytest.approx(3.0)


def test_upgrade_needs_margin_and_hold():
    policy = Policy(FRONT)
    policy.update(0.0, 700.0)
    # 1050 kbps: 800 fits the budget (840) but not with the 10 % upgrade margin (756).
    assert not any(d.changed for d in drive(policy, 1.0, 10.0, const(1050.0)))
    decisions = drive(policy, 10.0, 14.0, const(1150.0))  # 828 >= 800: fits with margin
    first = next(i for i, d in enumerate(decisions) if d.changed)
    assert first * DT_S == pytest.approx(3.0)
    assert decisions[first - 1].reason == 'hold: x3-jpeg-q70-15hz-u0.03-k0.2 fits, 2.9/3.0 s'
    assert decisions[first].reason.endswith(': up') and kbps_of(decisions[first]) == 800.0


def test_upgrade_hold_restarts_when_the_fit_is_interrupted():
    policy = Policy(FRONT)
    policy.update(0.0, 700.0)

    def bandwidth(t: float) -> float:
        return 1000.0 if 2.0 <= t < 2.3 else 1150.0
    decisions = drive(policy, 0.1, 6.0, bandwidth)
    switch_s = [0.1 + i * DT_S for i, d in enumerate(decisions) if d.changed]
    assert switch_s == [pytest.approx(5.3)]  # 3 s after the fit resumed at 2.3 s


def test_noisy_estimate_near_a_threshold_does_not_flap():
    rng = random.Random(7)
    noise = {round(i * DT_S, 1): rng.uniform(-0.08, 0.08) for i in range(1300)}

    def bandwidth(t: float) -> float:  # 800 kbps needs 1000 kbps: hover around it
        return 1000.0 * (1.0 + noise[round(t, 1)])

    switches = sum(d.changed for d in drive(Policy(FRONT), 0.0, 120.0, bandwidth))
    assert switches <= 2  # the initial choice, and at most one step down
    # Without hysteresis the same trace flaps: the test can tell the difference.
    bare = PolicyConfig(upgrade_hold_s=0.0, upgrade_margin=0.0, min_switch_interval_s=0.0)
    assert sum(d.changed for d in drive(Policy(FRONT, bare), 0.0, 120.0, bandwidth)) > 50


def test_unchanged_decisions_say_hold():
    rng = random.Random(1)
    trace = [rng.choice([400.0, 900.0, 1500.0, 5000.0]) for _ in range(300)]
    decisions = drive(Policy(FRONT), 0.0, 30.0, lambda t: trace[round(t / DT_S)])
    assert all(d.reason.startswith('hold') for d in decisions if not d.changed)
    assert all(not d.reason.startswith('hold') for d in decisions if d.changed)


# --------------------------------------------------------------------- failed upgrades
def test_failed_upgrade_goes_back_to_its_origin_and_backs_off():
    policy = Policy(FRONT)
    policy.update(0.0, 1200.0)  # 800 kbps
    up = [d for d in drive(policy, 1.0, 5.0, const(1700.0)) if d.changed]
    assert [kbps_of(d) for d in up] == [1200.0]
    # The upgrade overloads the link: the estimate falls to 950 kbps (budget 760 kbps).
    back = policy.update(5.0, 950.0)
    assert kbps_of(back) == 800.0 and 'upgrade failed, back to x3' in back.reason
    # 800 kbps does not fit the budget, but the link carried it a moment ago: it stays for the
    # probe window, as long as it fits the whole estimate.
    assert not any(d.changed for d in drive(policy, 5.1, 14.9, const(950.0)))
    assert kbps_of(policy.update(15.1, 950.0)) == 500.0  # grace over
    # The next upgrade to 1200 kbps has to wait twice as long.
    decisions = drive(policy, 16.0, 30.0, const(1700.0))
    changes = [(16.0 + i * DT_S, kbps_of(d)) for i, d in enumerate(decisions) if d.changed]
    assert changes[0] == (pytest.approx(19.0), 800.0)  # 800 kbps never failed: 3 s
    assert changes[1] == (pytest.approx(25.1), 1200.0)  # 1200 kbps failed once: 6 s


def test_collapse_after_an_upgrade_is_not_softened():
    policy = Policy(FRONT)
    policy.update(0.0, 1200.0)
    drive(policy, 1.0, 5.0, const(1700.0))
    # The estimate falls below even the origin's bitrate: plain best fit, no grace.
    decision = policy.update(5.0, 500.0)
    assert kbps_of(decision) == 300.0 and 'down to' in decision.reason


def test_upgrade_that_sticks_clears_the_backoff():
    policy = Policy(FRONT, PolicyConfig(probe_window_s=5.0))
    policy.update(0.0, 1200.0)
    drive(policy, 1.0, 5.0, const(1700.0))
    policy.update(5.0, 950.0)  # failed: next hold 6 s
    decisions = drive(policy, 5.1, 20.0, const(1700.0))
    assert kbps_of(decisions[-1]) == 1200.0  # upgraded after 6 s, then stayed > 5 s
    policy.update(20.0, 1300.0)  # budget 1040: down to 800 after the probe window, no failure
    later = drive(policy, 21.0, 25.0, const(1700.0))
    assert [round(21.0 + i * DT_S, 1) for i, d in enumerate(later) if d.changed] == [24.0]


# ------------------------------------------------------------------------ latency guard
def test_latency_guard_steps_down_and_blocks_upgrades():
    policy = Policy(FRONT)
    policy.update(0.0, 2000.0)  # 1200 kbps; 3000 kbps would need 4167 kbps
    high = drive(policy, 1.0, 2.0, const(2000.0), latency=const(520.0))
    steps = [d for d in high if d.changed]
    assert len(steps) == 1 and kbps_of(steps[0]) == 800.0
    assert steps[0].reason == 'latency 520 ms > 400 ms: step down to x3-jpeg-q70-15hz-u0.03-k0.2'
    # Latency back to normal; 1200 kbps fits the bandwidth again but the cool-down holds it.
    low = drive(policy, 2.0, 6.8, const(2000.0), latency=const(100.0))
    assert not any(d.changed for d in low)
    assert low[-1].reason.startswith('hold: latency cool-down')
    # Cool-down (5 s after the last violation at 1.9 s) then the usual 3 s hold.
    after = drive(policy, 6.8, 12.0, const(2000.0), latency=const(100.0))
    switch_s = [6.8 + i * DT_S for i, d in enumerate(after) if d.changed]
    assert switch_s == [pytest.approx(9.9)] and kbps_of(after[-1]) == 1200.0


def test_persistent_latency_keeps_stepping_down_one_entry_at_a_time():
    policy = Policy(FRONT)
    policy.update(0.0, 5000.0)  # 3000 kbps
    decisions = drive(policy, 1.0, 6.05, const(5000.0), latency=const(600.0))
    steps = [(round(1.0 + i * DT_S, 1), kbps_of(d)) for i, d in enumerate(decisions) if d.changed]
    # One entry per latency_window_s (2 s), giving each step time to show.
    assert steps == [(1.0, 1200.0), (3.0, 800.0), (5.0, 500.0)]


def test_growing_latency_steps_down_before_the_limit():
    policy = Policy(FRONT)
    policy.update(0.0, 2000.0)
    decisions = drive(policy, 1.0, 3.0, const(2000.0), latency=lambda t: 100.0 + 150.0 * (t - 1))
    step = next(d for d in decisions if d.changed)
    assert kbps_of(step) == 800.0 and 'growing 150 ms/s' in step.reason
    assert policy.latency_ms < 400.0


def test_falling_latency_is_given_time_to_recover():
    policy = Policy(FRONT)
    policy.update(0.0, 2000.0)
    # 800 ms falling at 500 ms/s (a queue draining after the step down).
    decisions = drive(policy, 1.0, 3.0, const(2000.0),
                      latency=lambda t: 900.0 if t < 1.05 else 800.0 - 500.0 * (t - 1.1))
    assert sum(d.changed for d in decisions) == 1  # the first step only


def test_latency_at_the_cheapest_entry_holds():
    policy = Policy(FRONT)
    policy.update(0.0, 100.0)
    decisions = drive(policy, 1.0, 4.0, const(100.0), latency=const(900.0))
    assert not any(d.changed for d in decisions) and kbps_of(decisions[-1]) == 300.0


# ---------------------------------------------------------------------- accuracy watchdog
def test_accuracy_floor_prefers_a_smaller_scale_within_bandwidth():
    x4_sharp = entry(4, 90, 900.0, 0.75)
    x2_coarse = entry(2, 30, 1000.0, 0.72)  # off the front: costs more, profiled lower
    x1 = entry(1, 30, 3000.0, 0.85)  # even smaller scale, but does not fit
    policy = Policy([entry(4, 50, 400.0, 0.60), x4_sharp, x2_coarse, x1],
                    PolicyConfig(accuracy_floor=0.6))
    assert policy.update(0.0, 1500.0).entry is x4_sharp  # budget 1200 kbps
    # The probes say SR is failing on this footage.
    decisions = drive(policy, 1.0, 5.0, const(1500.0),
                      accuracy=lambda t: 0.45 if t < 1.05 else None)
    switch = next(d for d in decisions if d.changed)
    assert switch.entry is x2_coarse and 'accuracy watchdog (live 0.45' in switch.reason
    assert decisions.index(switch) * DT_S == pytest.approx(3.0)
    assert policy.accuracy_mode(5.0) and policy.live_accuracy == 0.45
    # Good readings from the smaller scale; after accuracy_hold_s the profile's choice returns.
    later = drive(policy, 5.0, 16.0, const(1500.0), accuracy=const(0.8))
    assert later[-1].entry is x4_sharp and not policy.accuracy_mode(16.0)


def test_accuracy_readings_above_the_floor_change_nothing():
    policy = Policy(FRONT, PolicyConfig(accuracy_floor=0.5))
    policy.update(0.0, 1200.0)
    decisions = drive(policy, 1.0, 10.0, const(1200.0), accuracy=const(0.7))
    assert not any(d.changed for d in decisions)


# ------------------------------------------------------------------- inputs and config
def test_nan_samples_are_ignored_and_bad_bandwidth_is_refused():
    policy = Policy(FRONT)
    policy.update(0.0, 1000.0, latency_ms=math.nan, live_accuracy=math.nan)
    assert policy.latency_ms is None and policy.live_accuracy is None
    for bad in (math.nan, math.inf, -1.0):
        with pytest.raises(ValueError, match='bandwidth_kbps'):
            policy.update(1.0, bad)


def test_empty_front_is_refused():
    with pytest.raises(ValueError, match='at least one'):
        Policy([])


@pytest.mark.parametrize('field, value', [
    ('headroom', 0.0), ('headroom', 1.5), ('upgrade_margin', 1.0), ('accuracy_floor', -0.1),
    ('latency_limit_ms', 0.0), ('latency_window_s', -1.0), ('upgrade_hold_s', -0.5),
    ('min_switch_interval_s', -1.0), ('max_upgrade_hold_s', 1.0), ('downgrade_immediately', 1),
])
def test_config_validation_names_the_field(field, value):
    config = PolicyConfig(**{field: value})
    with pytest.raises(ValueError, match=field):
        config.validate()
    with pytest.raises(ValueError, match=field):
        Policy(FRONT, config)


def test_set_config_applies_live_and_validates():
    policy = Policy(FRONT)
    policy.update(0.0, 1100.0)
    with pytest.raises(ValueError, match='headroom'):
        policy.set_config(PolicyConfig(headroom=2.0))
    policy.set_config(PolicyConfig(headroom=0.5))  # budget 550: 800 kbps no longer fits
    assert kbps_of(policy.update(2.0, 1100.0)) == 500.0
    assert policy.current.kbps == 500.0 and len(policy.front) == len(FRONT)


def test_latency_tracker_smooths_and_measures_the_trend():
    tracker = LatencyTracker(window_s=2.0, time_constant_s=0.5)
    assert tracker.smoothed_ms is None and tracker.slope_ms_per_s == 0.0
    for i in range(30):
        tracker.add(i * DT_S, 100.0 + 50.0 * i * DT_S)  # +50 ms per s
    assert tracker.slope_ms_per_s == pytest.approx(50.0)
    assert 220.0 < tracker.smoothed_ms < 245.0  # lags the last sample (245) by ~tau x slope
    tracker.reset()
    tracker.add(0.0, 80.0)
    assert tracker.smoothed_ms == 80.0 and tracker.slope_ms_per_s == 0.0
    with pytest.raises(ValueError):
        LatencyTracker(window_s=0.0)
