"""Bandwidth estimator on synthetic traces, alone and closed-loop with the policy.

The link is a FIFO bottleneck whose capacity steps over time, with a finite buffer (tail drop),
propagation delay, a little jitter and a constant clock offset between robot and cloud. The
sender emits 15 frames/s whose sizes vary (+-25 %) with a double-size key frame every 2 s, like
a JPEG stream of a moving scene.
"""
import heapq
import math
import random
from dataclasses import dataclass
from typing import Callable, List, Optional

import pytest

from cloudseg_ros.core.bandwidth import (BandwidthEstimator, BandwidthEstimatorConfig,
                                         delay_trend, linear_slope)
from cloudseg_ros.core.policy import Policy
from cloudseg_ros.core.profile import ProfileEntry, StreamConfig

FPS = 15.0
CLOCK_OFFSET_S = -3600.25  # cloud clock minus robot clock; must not matter
STEPS_KBPS = ((0.0, 8000.0), (20.0, 1000.0), (40.0, 4000.0))  # (from time s, capacity kbps)


def stepped(steps=STEPS_KBPS) -> Callable[[float], float]:
    """Capacity in kbps as a function of time, piecewise constant."""
    def capacity(t: float) -> float:
        return [kbps for start, kbps in steps if t >= start][-1]
    return capacity


class BottleneckLink:
    """FIFO bottleneck with time-varying capacity and a tail-drop buffer."""

    def __init__(self, capacity_kbps: Callable[[float], float], seed: int,
                 buffer_bytes: int, prop_delay_s: float = 0.03) -> None:
        self.capacity_kbps = capacity_kbps
        self.buffer_bytes = buffer_bytes
        self.prop_delay_s = prop_delay_s
        self.rng = random.Random(seed)
        self.busy_until_s = 0.0
        self.last_arrival_s = 0.0

    def send(self, t: float, size_bytes: int):
        """(arrival time on the true clock or None if dropped, queueing wait in s)."""
        bytes_per_s = self.capacity_kbps(t) * 1000.0 / 8.0
        wait_s = max(0.0, self.busy_until_s - t)
        if wait_s * bytes_per_s + size_bytes > self.buffer_bytes:
            return None, wait_s
        self.busy_until_s = t + wait_s + size_bytes / bytes_per_s
        jitter_s = self.rng.expovariate(1.0 / 0.002)
        self.last_arrival_s = max(self.last_arrival_s,
                                  self.busy_until_s + self.prop_delay_s + jitter_s)
        return self.last_arrival_s, wait_s


@dataclass
class Tick:
    """State of the simulation at one sender frame time."""

    t: float
    estimate_kbps: float
    sent_kbps: float  # nominal rate the sender used for this frame
    wait_s: float  # queueing delay this frame met at the bottleneck
    state: str
    entry_kbps: Optional[float] = None
    changed: bool = False


def simulate(duration_s: float, capacity_kbps: Callable[[float], float], seed: int = 0,
             rate_kbps: Optional[Callable[[float, float], float]] = None,
             policy: Optional[Policy] = None,
             config: Optional[BandwidthEstimatorConfig] = None,
             key_factor: float = 2.0, buffer_bytes: int = 250_000) -> List[Tick]:
    """Run sender -> link -> estimator (-> policy -> sender) and return one Tick per frame.

    The sender's rate is `rate_kbps(t, estimate)` or, with a `policy`, the kbps of the entry it
    chose. The cloud sees arrivals on its own clock (offset by CLOCK_OFFSET_S). The default
    buffer, 250 kB, is 2 s at 1 Mbit/s, a typical Wi-Fi/LTE bottleneck.
    """
    estimator = BandwidthEstimator(config)
    link = BottleneckLink(capacity_kbps, seed, buffer_bytes)
    rng = random.Random(seed + 1000)
    in_flight: list = []
    ticks: List[Tick] = []
    latency_ms = None
    for index in range(int(duration_s * FPS)):
        t = index / FPS
        latency_ms = None
        while in_flight and in_flight[0][0] <= t:
            arrival, sent, size, seq = heapq.heappop(in_flight)
            estimator.on_frame(sent, arrival + CLOCK_OFFSET_S, size, seq)
            latency_ms = (arrival - sent) * 1000.0 + 50.0  # + cloud processing
        estimate = estimator.estimate_kbps(t + CLOCK_OFFSET_S)
        tick = Tick(t, estimate, 0.0, 0.0, estimator.state)
        if policy is not None:
            decision = policy.update(t, estimate, latency_ms)
            tick.entry_kbps, tick.changed = decision.entry.kbps, decision.changed
            tick.sent_kbps = decision.entry.kbps
        else:
            tick.sent_kbps = rate_kbps(t, estimate)
        size = tick.sent_kbps * 1000.0 / 8.0 / FPS * rng.uniform(0.75, 1.25)
        if index % 30 == 0:
            size *= key_factor
        arrival, tick.wait_s = link.send(t, int(size))
        if arrival is not None:
            heapq.heappush(in_flight, (arrival, t, int(size), index))
        ticks.append(tick)
    return ticks


def first_time(ticks: List[Tick], after_s: float, condition) -> float:
    """Seconds after `after_s` until `condition(tick)` first holds (inf if never)."""
    for tick in ticks:
        if tick.t >= after_s and condition(tick):
            return tick.t - after_s
    return float('inf')


def headroom_sender(t: float, estimate: float) -> float:
    """A sender that uses 80 % of the estimate, as the policy's headroom does."""
    return 0.8 * estimate


# ------------------------------------------------------------------------ estimator alone
@pytest.mark.parametrize('seed', [0, 1, 2])
def test_estimate_follows_drop_and_recovery(seed):
    ticks = simulate(60.0, stepped(), seed, headroom_sender)
    # Drop 8 -> 1 Mbit/s at 20 s: the sender (0.8 x estimate) fits the link again within ~2 s.
    assert first_time(ticks, 20.0, lambda k: 0.8 * k.estimate_kbps <= 1000.0) <= 2.5
    # Recovery 1 -> 4 Mbit/s at 40 s: half the new capacity is used within a few seconds.
    assert first_time(ticks, 40.0, lambda k: 0.8 * k.estimate_kbps >= 2000.0) <= 6.5
    assert max(k.estimate_kbps for k in ticks if k.t >= 50.0) >= 4000.0


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_queue_drains_after_drop_and_stays_short(seed):
    ticks = simulate(60.0, stepped(), seed, headroom_sender)
    # The 8x drop fills the 2 s buffer. The estimate never goes below what arrives (issue 12),
    # so only the sender's headroom (20 %) drains it: ~2 s / 0.2 = 10 s, 8 s while a cut to
    # 0.85 x the delivered rate did it...
    assert first_time(ticks, 21.0, lambda k: k.wait_s < 0.1) < 16.0
    # ...and the sawtooth of probing above and backing off never builds a long queue again.
    assert max(k.wait_s for k in ticks if k.t >= 36.0) < 0.8


def test_clock_offset_does_not_matter():
    frames = [(i / FPS, i / FPS + 0.05 + 0.001 * (i % 7), 5000 + 37 * (i % 11), i)
              for i in range(300)]
    estimates = []
    for offset_s in (0.0, 1.7e9, -12345.678):
        estimator = BandwidthEstimator()
        for send, arrival, size, seq in frames:
            estimator.on_frame(send, arrival + offset_s, size, seq)
        estimates.append(estimator.estimate_kbps(frames[-1][1] + offset_s))
    assert estimates[1] == pytest.approx(estimates[0], rel=1e-6)
    assert estimates[2] == pytest.approx(estimates[0], rel=1e-6)


def test_key_frames_below_capacity_are_not_overuse():
    # 60 % of a 3 Mbit/s link with triple-size key frames: delay jumps, but no queue builds.
    ticks = simulate(40.0, lambda t: 3000.0, 0, lambda t, e: 1800.0, key_factor=3.0)
    assert not [k for k in ticks if k.state == 'overuse']
    assert min(k.estimate_kbps for k in ticks if k.t > 10.0) > 1800.0


def test_small_sustained_excess_is_detected():
    # 10 % above capacity: the queue grows 100 ms per second and must be noticed quickly.
    ticks = simulate(20.0, lambda t: 2000.0 if t < 10.0 else 1000.0, 0, lambda t, e: 1100.0)
    assert first_time(ticks, 10.0, lambda k: k.state == 'overuse') < 2.5
    # Down to what the link delivers (within measurement noise), below what is sent.
    assert ticks[-1].estimate_kbps < 1080.0


def cpu_jittered_frames(duration_s: float, amplitude_ms: float, period_s: float,
                        queue_from_s: float = math.inf, queue_ms_per_s: float = 150.0):
    """(send, arrival, size, seq) of 500 kbit/s on an idle link whose arrival stamps wander.

    The delay rises and falls by up to `amplitude_ms` every ~`period_s` (a busy receiver CPU:
    the stamps wait, then catch up); from `queue_from_s` on a real queue also grows.
    """
    rng = random.Random(7)
    frames = []
    for seq in range(int(duration_s * FPS)):
        t = seq / FPS
        phase = 2.0 * math.pi * t / period_s + rng.uniform(-0.3, 0.3)
        delay_s = 0.03 + amplitude_ms * 1e-3 * max(0.0, math.sin(phase))
        delay_s += max(0.0, t - queue_from_s) * queue_ms_per_s * 1e-3
        frames.append((t, t + delay_s, 4200, seq))
    return frames


def overuse_frames(config: BandwidthEstimatorConfig, frames) -> int:
    estimator = BandwidthEstimator(config)
    count = 0
    for frame in frames:
        estimator.on_frame(*frame)
        count += estimator.state == 'overuse' and frame[0] > 5.0
    return count


def test_adaptive_threshold_reads_less_receiver_jitter_as_overuse():
    frames = cpu_jittered_frames(30.0, amplitude_ms=60.0, period_s=2.0)
    fixed = BandwidthEstimatorConfig(overuse_slope_max_ms_per_s=20.0)  # the old fixed 20 ms/s
    adaptive = BandwidthEstimatorConfig()
    assert overuse_frames(adaptive, frames) < 0.6 * overuse_frames(fixed, frames)


def test_adaptive_threshold_rises_is_clamped_and_comes_back():
    config = BandwidthEstimatorConfig()
    estimator = BandwidthEstimator(config)
    assert estimator.overuse_threshold_ms_per_s == config.overuse_slope_ms_per_s
    peak = 0.0
    for frame in cpu_jittered_frames(30.0, amplitude_ms=80.0, period_s=2.0):
        estimator.on_frame(*frame)
        peak = max(peak, estimator.overuse_threshold_ms_per_s)
    assert config.overuse_slope_ms_per_s + 10.0 < peak <= config.overuse_slope_max_ms_per_s
    # Calm arrivals afterwards: back down to the floor, never below it.
    for seq in range(450, 900):
        estimator.on_frame(seq / FPS, seq / FPS + 0.03, 4200, seq)
    assert estimator.overuse_threshold_ms_per_s == pytest.approx(config.overuse_slope_ms_per_s,
                                                                 abs=0.5)


def test_real_queue_is_detected_after_jitter_raised_the_threshold():
    # The queue grows 150 ms per s (15 % over capacity): a jump the threshold does not follow.
    estimator = BandwidthEstimator()
    detected_s = None
    for frame in cpu_jittered_frames(30.0, 60.0, 2.0, queue_from_s=25.0):
        estimator.on_frame(*frame)
        if frame[0] >= 25.0 and estimator.state == 'overuse' and detected_s is None:
            detected_s = frame[0] - 25.0
    assert detected_s is not None and detected_s < 1.5


def test_app_limited_estimate_is_capped_by_probe_factor():
    # 500 kbps on an 8 Mbit/s link: the estimate may run ahead, but only to ~2x what it sees.
    ticks = simulate(60.0, lambda t: 8000.0, 0, lambda t, e: 500.0)
    assert 800.0 < ticks[-1].estimate_kbps < 2.0 * 1.3 * 500.0  # key frames: +1/30 of rate


def test_loss_ratio_counts_gaps_not_reordering():
    estimator = BandwidthEstimator()
    for seq in [0, 1, 2, 4, 3, 5, 5, 6, 9]:  # 7 and 8 lost; 3/4 reordered; 5 duplicated
        estimator.on_frame(seq * 0.1, seq * 0.1 + 0.05, 1000, seq)
    assert estimator.loss_ratio == pytest.approx(2 / 10)


def test_loss_above_threshold_cuts_the_estimate():
    estimator = BandwidthEstimator(BandwidthEstimatorConfig(initial_kbps=2000.0))
    for i in range(40):
        if i % 3 != 2:  # a third of the frames never arrive, delays stay flat
            estimator.on_frame(i / FPS, i / FPS + 0.05, 2000, i)
    assert estimator.loss_ratio > 0.25
    assert estimator.estimate_kbps(40 / FPS) < 2000.0 * 0.9


def test_stall_decays_the_estimate_and_sender_restart_is_tolerated():
    estimator = BandwidthEstimator(BandwidthEstimatorConfig(initial_kbps=2000.0))
    for i in range(30):
        estimator.on_frame(i / FPS, i / FPS + 0.05, 4000, 500 + i)
    before = estimator.estimate_kbps(2.0)
    assert estimator.estimate_kbps(2.0 + 2.5) == before  # within stall_timeout_s: no change
    assert estimator.estimate_kbps(2.0 + 10.0) < 0.5 * before
    # The robot restarts: new seq numbers from 0 and another clock offset; no loss is invented.
    estimator.on_frame(100.0, 12.0, 4000, 0)
    estimator.on_frame(100.1, 12.1, 4000, 1)
    assert estimator.loss_ratio == 0.0
    assert estimator.estimate_kbps(12.1) < 0.5 * before  # the decay was committed


def test_arrival_stamp_hours_ahead_neither_overflows_nor_sticks():
    estimator = BandwidthEstimator()
    for i in range(30):
        estimator.on_frame(i / FPS, i / FPS + 0.05, 4000, i)
    # One report 20,000 s in the future (a forged or broken stamp): the growth term used to
    # raise OverflowError here, ending the controller.
    estimator.on_frame(30 / FPS, 20_000.0, 4000, 30)
    cfg = estimator.config
    assert cfg.min_kbps <= estimator.estimate_kbps(20_000.0) <= cfg.max_kbps
    # Genuine arrivals after it: the arrival clock "went back", so the history starts over.
    for i in range(31, 40):
        estimator.on_frame(i / FPS, i / FPS + 0.05, 4000, i)
    assert estimator.frames_received == 9


def test_growth_after_a_gap_is_bounded_by_one_window():
    config = BandwidthEstimatorConfig(stall_timeout_s=1e6, probe_factor=1000.0)
    estimator = BandwidthEstimator(config)
    for i in range(30):
        estimator.on_frame(i / FPS, i / FPS + 0.05, 4000, i)
    before = estimator.estimate_kbps(2.0)
    estimator.on_frame(500.0, 500.05, 4000, 30)  # 500 s of silence, no stall decay configured
    assert estimator.estimate_kbps(500.05) <= before * (1 + config.max_increase_per_s) ** 1.01


def test_delay_trend_separates_queue_growth_from_frame_size():
    rng = random.Random(3)
    times = [i / FPS for i in range(20)]
    sizes = [rng.choice([4000, 4000, 4000, 16000]) for _ in times]
    # Transmission at 1 Mbit/s adds 8 ms per kB, no queue: the trend must stay ~0.
    flat = [s * 8.0 / 1000.0 for s in sizes]
    assert abs(delay_trend(times, flat, sizes)) < 2.0
    # Same frames, plus a queue growing 150 ms per second.
    growing = [d + 150.0 * t for d, t in zip(flat, times)]
    assert delay_trend(times, growing, sizes, smoothing=0.5) == pytest.approx(150.0, rel=0.2)
    assert linear_slope([0.0, 1.0, 2.0], [1.0, 3.0, 5.0]) == pytest.approx(2.0)
    assert linear_slope([1.0, 1.0], [0.0, 5.0]) == 0.0


@pytest.mark.parametrize('field, value', [
    ('window_s', 0.0), ('trend_window', 3), ('trend_window', 20.5), ('decrease_factor', 1.0),
    ('delay_smoothing', 0.0), ('increase_per_s', 0.9), ('probe_factor', 0.5),
    ('initial_kbps', 10.0), ('overuse_min_frames', 0), ('loss_threshold', 1.5),
    ('overuse_slope_max_ms_per_s', 10.0), ('threshold_up_per_s', 0.0),
    ('threshold_max_step_ms_per_s', -1.0),
])
def test_config_validation_names_the_field(field, value):
    config = BandwidthEstimatorConfig(**{field: value})
    with pytest.raises(ValueError, match=field):
        config.validate()
    with pytest.raises(ValueError, match=field):
        BandwidthEstimator(config)


def test_negative_size_is_rejected():
    with pytest.raises(ValueError, match='size_bytes'):
        BandwidthEstimator().on_frame(0.0, 0.1, -1, 0)


# ------------------------------------------------------- closed loop: estimator + policy
def ladder() -> List[ProfileEntry]:
    """A front whose levels are ~1.45x apart, like a profiled JPEG grid."""
    kbps = [150, 250, 400, 600, 900, 1300, 1900, 2800, 4000, 5500]
    return [ProfileEntry(StreamConfig(4 if i < 5 else 2, 'jpeg', 40 + 5 * i, 15.0, 0.03),
                         float(k), 0.5 + 0.04 * i) for i, k in enumerate(kbps)]


@pytest.mark.parametrize('seed', [0, 1])
def test_closed_loop_follows_capacity_steps(seed):
    # A 1 MB buffer (8 s at 1 Mbit/s): the delay bound below comes from the controller.
    ticks = simulate(75.0, stepped(), seed, policy=Policy(ladder()), buffer_bytes=1_000_000)
    # Before the drop it climbs to a level the 8 Mbit/s link carries.
    assert max(k.entry_kbps for k in ticks if k.t < 20.0) >= 2800.0
    # After the drop to 1 Mbit/s it sends less than the link carries within ~1 s...
    assert first_time(ticks, 20.0, lambda k: k.entry_kbps <= 1000.0) < 1.5
    # ...the queue the drop left behind drains, and probing never builds a long one again.
    assert max(k.wait_s for k in ticks) < 2.5
    assert first_time(ticks, 21.0, lambda k: k.wait_s < 0.1) < 5.0
    assert max(k.wait_s for k in ticks if k.t >= 28.0) < 0.3
    # After the recovery to 4 Mbit/s it climbs back, one level per hold (~4 s each).
    assert first_time(ticks, 40.0, lambda k: k.entry_kbps >= 1900.0) < 22.0
    assert max(k.entry_kbps for k in ticks if k.t >= 60.0) >= 2800.0


@pytest.mark.parametrize('capacity_kbps', [1150.0, 1300.0, 2500.0, 4000.0])
def test_closed_loop_does_not_flap_at_steady_capacity(capacity_kbps):
    ticks = simulate(150.0, lambda t: capacity_kbps, 0, policy=Policy(ladder()))
    settled = [k for k in ticks if k.t >= 30.0]
    # The only switches left are failed upgrades to the level above the capacity (two each,
    # up and back), and the policy backs off (3, 6, 12, 24 ... s holds) so they thin out.
    assert sum(k.changed for k in settled) <= 10
    assert sum(k.changed for k in settled if k.t >= 90.0) <= 4
    carried = [k for k in settled if k.entry_kbps <= capacity_kbps]
    assert len(carried) / len(settled) > 0.9
    best_carried = max(e.kbps for e in ladder() if e.kbps <= 0.8 * capacity_kbps)
    assert sum(k.entry_kbps for k in carried) / len(carried) >= 0.9 * best_carried
