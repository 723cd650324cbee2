"""Uplink bandwidth estimation at the cloud from the frames as they arrive.

The estimator sees, for every received frame, the robot's stamp (acquisition or send time),
the cloud's arrival time, the payload size and the sequence number. It combines three signals
in the spirit of WebRTC's Google Congestion Control (GCC), adapted to whole frames:

Delay gradient (the congestion signal)
    The one-way delay ``arrival - send`` contains an unknown, constant clock offset between
    robot and cloud, so only its *variations* are used: the delay relative to the first frame
    is regressed over the last ``trend_window`` frames (and at most ``trend_max_span_s``
    seconds, so the trend stays recent) against arrival time. Unlike GCC's equal-sized
    packets, frames differ a lot in size (key frames, scene detail) and a frame's delay
    includes its own transmission time ``size / capacity``, so frame size is a second
    regressor: ``delay = a + slope * t + size / capacity`` (the arrival-time model of the
    original GCC draft). The size-corrected delays are smoothed (EWMA) and their slope over
    time, in ms of delay per s, is ~0 while the bottleneck queue is stable and equals the
    excess ``(sent - capacity) / capacity`` (x1000) while it fills (:func:`delay_trend`). A
    slope above the threshold for ``overuse_min_frames`` frames in a row is *overuse*, below
    its negative *underuse* (the queue drains), otherwise *normal*. The threshold adapts as
    GCC's does: it starts at ``overuse_slope_ms_per_s`` and moves toward |slope| (faster up
    than down), except when |slope| jumps far past it (a queue, not noise), clamped to
    ``[overuse_slope_ms_per_s, overuse_slope_max_ms_per_s]``, so sustained jitter of the
    arrival stamps (a busy receiver) reads as overuse less often.

Delivery rate (the capacity measurement)
    Bytes that arrived over the last ``window_s`` seconds. It equals the link capacity only
    while the bottleneck is busy, i.e. exactly when overuse is signalled. Right after a drop the
    window still holds frames from before it, and radio links deliver frames in bursts, so the
    rate used for a decrease is the minimum of the window rate and the dispersion rate of the
    last few frames (bytes over their arrival spread): neither a window still holding frames
    from before a drop nor a few frames that arrived bunched together can inflate it alone.

Rate control (AIMD with an upper probe, and the delivered rate as a floor)
    - what arrived is a floor: the link carried it, so the estimate never falls below the
      delivery rate of the last ``window_s`` (GCC's ``beta * rate`` cut would; here the policy's
      headroom keeps the sender below the estimate, which is what drains a queue). Without the
      floor a cut to ~0 (a start-up read as loss, a burst of late frames) left the estimate at
      ``min_kbps`` while 250 kbit/s arrived, and the multiplicative increase climbed from there
      at a few kbit/s per second (issue 12);
    - overuse: ``estimate = min(estimate, delivery rate)`` (the robust rate below), at most once
      per ``window_s`` (each decrease needs a fresh measurement of the rate);
    - underuse: hold (as GCC does), because the queue is draining and an increase would
      refill it; increasing here too left standing queues of ~1.5 s at 1 Mbit/s in simulation;
    - normal: multiplicative increase at ``increase_per_s`` (+8 %/s), doubling every
      ``ramp_doubling_s`` of uninterrupted normal state up to ``max_increase_per_s``: slow
      near the capacity just measured, fast to rediscover capacity after a recovery;
    - the increase stops at ``probe_factor`` times the delivery rate: when the sender is
      app-limited (a discrete configuration, skipped frames) the delivery rate under-measures
      capacity, so the estimate may run ahead of it to let the policy probe the next level,
      but not without bound;
    - frame loss (sequence gaps) above ``loss_threshold`` also decreases the estimate by
      ``(1 - loss / 2)`` (GCC's loss rule), for buffers that overflow before delay shows;
    - silence longer than ``stall_timeout_s`` (the robot sends a FORCED frame at least every
      few seconds, so this means a broken link) decays the estimate by ``decrease_factor`` per
      second, so the policy resumes with a cautious configuration;
    - the sender's own report that its recent frames did not arrive (:meth:`on_undelivered`,
      core/delivery.py) cuts the estimate to the rate that did arrive.

Measured on the synthetic link of test/unit/test_bandwidth.py (15 fps, +-25 % frame sizes,
double-size key frames, 250 kB buffer, sender at 80 % of the estimate): after an 8 -> 1 Mbit/s
drop the sender fits the link again after 1.1-1.9 s; after a 1 -> 4 Mbit/s recovery it uses
half the new capacity after 3.8-5.1 s; triple-size key frames at 60 % load raise no overuse.

All times are seconds: ``send_time_s`` on the robot's clock, ``arrival_time_s`` and ``now_s``
on the cloud's (monotonic or ROS time, but one clock throughout).
"""
import math
from collections import deque
from dataclasses import dataclass
from typing import Deque, Optional, Sequence

import numpy as np

# Frames whose arrival spread gives the dispersion rate; 4 frames = 3 inter-arrival gaps.
DISPERSION_FRAMES = 4
# A delivery-rate span shorter than this is a burst, not a measurement.
MIN_RATE_SPAN_S = 0.05
# Fewest frames for a delay trend (a line through 2 points is all noise).
MIN_TREND_FRAMES = 6
# A sequence number this far below the highest seen means the sender restarted.
SEQ_RESTART_GAP = 1000
# An arrival clock that goes back by more than this means a clock reset: start over.
CLOCK_JUMP_S = 1.0
# Longest inter-arrival gap one threshold update may use (a gap says nothing about jitter).
THRESHOLD_MAX_DT_S = 0.1
# The accelerating increase stops doubling here (2^60 x any increase rate is past every cap).
MAX_DOUBLINGS = 60.0


def linear_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ys over xs; 0.0 if xs has no spread (e.g. one burst)."""
    count = len(xs)
    if count < 2:
        return 0.0
    mean_x = sum(xs) / count
    mean_y = sum(ys) / count
    var_x = sum((x - mean_x) ** 2 for x in xs)
    if var_x < 1e-12:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / var_x


def delay_trend(times_s: Sequence[float], delays_ms: Sequence[float],
                sizes_bytes: Sequence[float], smoothing: float = 0.9) -> float:
    """Queue-growth slope in ms/s of frame delays, corrected for frame size and smoothed.

    1. Fit ``delay = a + b * t + c * size`` by least squares; ``c * size`` is each frame's own
       transmission time. A negative `c` is unphysical (a bigger frame cannot arrive sooner),
       the term is then fitting noise and is dropped.
    2. Smooth the size-corrected delays with an EWMA (weight `smoothing` on the past, GCC's
       0.9), so that one late frame, e.g. one queued behind a big key frame, barely moves the
       trend while a queue that keeps growing does.
    3. Return the least-squares slope of the smoothed delays over time.
    """
    times = np.asarray(times_s, dtype=np.float64)
    delays = np.asarray(delays_ms, dtype=np.float64)
    sizes_kb = np.asarray(sizes_bytes, dtype=np.float64) / 1000.0
    if times.size < 3 or np.ptp(times) < 1e-6:
        return 0.0
    # Centred columns keep the fit well conditioned; constant sizes give a zero column, which
    # lstsq's minimum-norm solution turns into c = 0.
    design = np.column_stack([np.ones_like(times), times - times.mean(),
                              sizes_kb - sizes_kb.mean()])
    size_coef = max(0.0, float(np.linalg.lstsq(design, delays, rcond=None)[0][2]))
    corrected = delays - size_coef * sizes_kb
    smoothed = np.empty_like(corrected)
    level = corrected[0]
    for index, value in enumerate(corrected):
        level = smoothing * level + (1.0 - smoothing) * value
        smoothed[index] = level
    return linear_slope(times.tolist(), smoothed.tolist())


@dataclass
class BandwidthEstimatorConfig:
    """Tuning of :class:`BandwidthEstimator`; the module docstring explains each mechanism."""

    window_s: float = 1.0  # delivery-rate window, s of arrival time
    trend_window: int = 20  # frames in the delay-trend regression (GCC uses 20)
    trend_max_span_s: float = 2.0  # ...and at most this many seconds of arrivals
    delay_smoothing: float = 0.9  # EWMA weight of the past on size-corrected delays (GCC: 0.9)
    overuse_slope_ms_per_s: float = 20.0  # initial and lowest overuse threshold, ms of delay per s
    overuse_slope_max_ms_per_s: float = 60.0  # highest the adaptive threshold goes, ms per s
    threshold_up_per_s: float = 1.0  # rate at which the threshold rises toward |trend|, per s
    threshold_down_per_s: float = 0.3  # ...and falls toward it, per s
    threshold_max_step_ms_per_s: float = 20.0  # a |trend| this far above it does not move it
    overuse_min_frames: int = 2  # consecutive frames over the threshold before overuse
    decrease_factor: float = 0.85  # decay per second of silence past stall_timeout_s
    increase_per_s: float = 0.08  # initial multiplicative increase in normal state, per second
    ramp_doubling_s: float = 1.0  # the increase rate doubles every this many s of normal state
    max_increase_per_s: float = 0.5  # upper bound of the accelerating increase, per second
    probe_factor: float = 2.0  # estimate may exceed the delivery rate by at most this factor
    loss_threshold: float = 0.1  # loss ratio above which the estimate is cut
    loss_window_s: float = 2.0  # seconds of arrivals over which loss is counted
    stall_timeout_s: float = 3.0  # silence after which the estimate decays
    initial_kbps: float = 1000.0  # estimate before any measurement
    min_kbps: float = 50.0  # the estimate never leaves [min_kbps, max_kbps]
    max_kbps: float = 100000.0

    def validate(self) -> None:
        """Raise ValueError naming the first field that is out of range."""
        positive = ('window_s', 'trend_max_span_s', 'overuse_slope_ms_per_s', 'ramp_doubling_s',
                    'loss_window_s', 'stall_timeout_s', 'min_kbps', 'threshold_up_per_s',
                    'threshold_down_per_s', 'threshold_max_step_ms_per_s')
        for name in positive:
            if not getattr(self, name) > 0.0:
                raise ValueError(f'{name} must be > 0, got {getattr(self, name)}')
        if not (isinstance(self.trend_window, int) and self.trend_window >= MIN_TREND_FRAMES):
            raise ValueError(f'trend_window must be an integer >= {MIN_TREND_FRAMES}, '
                             f'got {self.trend_window!r}')
        if not self.overuse_slope_max_ms_per_s >= self.overuse_slope_ms_per_s:
            raise ValueError(f'overuse_slope_max_ms_per_s ({self.overuse_slope_max_ms_per_s}) '
                             f'must be >= overuse_slope_ms_per_s ({self.overuse_slope_ms_per_s})')
        if not (isinstance(self.overuse_min_frames, int) and self.overuse_min_frames >= 1):
            raise ValueError(f'overuse_min_frames must be an integer >= 1, '
                             f'got {self.overuse_min_frames!r}')
        for name in ('delay_smoothing', 'decrease_factor', 'loss_threshold'):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f'{name} must be in (0, 1), got {getattr(self, name)}')
        if not 0.0 < self.increase_per_s <= self.max_increase_per_s:
            raise ValueError(f'need 0 < increase_per_s ({self.increase_per_s}) <= '
                             f'max_increase_per_s ({self.max_increase_per_s})')
        if not self.probe_factor >= 1.0:
            raise ValueError(f'probe_factor must be >= 1, got {self.probe_factor}')
        if not self.min_kbps <= self.initial_kbps <= self.max_kbps:
            raise ValueError(f'need min_kbps ({self.min_kbps}) <= initial_kbps '
                             f'({self.initial_kbps}) <= max_kbps ({self.max_kbps})')


@dataclass
class _Frame:
    """What the estimator keeps of one received frame."""

    arrival_s: float
    size_bytes: int
    seq: int
    delay_ms: float  # one-way delay relative to the first frame of the session


class BandwidthEstimator:
    """Delay-gradient + delivery-rate uplink estimator, fed one received frame at a time."""

    def __init__(self, config: Optional[BandwidthEstimatorConfig] = None) -> None:
        """Create an estimator; raises ValueError if `config` does not validate."""
        self._config = config or BandwidthEstimatorConfig()
        self._config.validate()
        self.reset()

    @property
    def config(self) -> BandwidthEstimatorConfig:
        """The active configuration (replace it with :meth:`set_config`)."""
        return self._config

    def set_config(self, config: BandwidthEstimatorConfig) -> None:
        """Validate and apply a new configuration live, keeping the current estimate."""
        config.validate()
        self._config = config
        self._estimate = min(max(self._estimate, config.min_kbps), config.max_kbps)

    def reset(self) -> None:
        """Forget everything, including the estimate, which returns to ``initial_kbps``."""
        self._estimate = self._config.initial_kbps
        self._last_decrease_s = -math.inf
        self._new_session()

    def _new_session(self) -> None:
        """Forget the frame history but keep the estimate: the link is still the same."""
        self._frames: Deque[_Frame] = deque()
        self._state = 'normal'
        self._slope = 0.0
        self._threshold = self._config.overuse_slope_ms_per_s
        self._over_count = 0
        self._delay_ref_s: Optional[float] = None
        self._max_seq: Optional[int] = None
        self._normal_since_s: Optional[float] = None
        self._frames_total = 0

    # ----------------------------------------------------------------------------- input
    def on_frame(self, send_time_s: float, arrival_time_s: float, size_bytes: int,
                 seq: int) -> None:
        """Account for one received frame and update the estimate.

        `send_time_s` is on the robot's clock, `arrival_time_s` on the cloud's; a constant offset
        between the clocks does not matter. Frames may arrive reordered or duplicated.
        """
        if size_bytes < 0:
            raise ValueError(f'size_bytes must be >= 0, got {size_bytes}')
        if self._is_new_session(arrival_time_s, seq):
            # Delays and sequence numbers of the old session mean nothing for the new one
            # (the robot may have rebooted with another clock offset).
            self._new_session()
            self._last_decrease_s = -math.inf
        last = self._frames[-1].arrival_s if self._frames else None
        # Arrival stamps must not go backwards; a small jitter is clamped rather than trusted.
        arrival = arrival_time_s if last is None else max(arrival_time_s, last)
        if last is not None and arrival - last > self._config.stall_timeout_s:
            self._estimate = self._stall_decayed(arrival - last)
            self._normal_since_s = None
        self._frames.append(_Frame(arrival, int(size_bytes), int(seq),
                                   self._relative_delay_ms(send_time_s, arrival)))
        self._frames_total += 1
        self._max_seq = seq if self._max_seq is None else max(self._max_seq, seq)
        self._prune(arrival)
        self._update_state(0.0 if last is None else arrival - last)
        self._update_rate(arrival, 0.0 if last is None else arrival - last)

    def on_undelivered(self, now_s: float, delivered_kbps: float) -> None:
        """Cut to what was delivered: the sender reports its most recent frames never arrived.

        This is the loss signal of a link that delivers nothing (see core/delivery.py): without
        it the estimate would only decay after ``stall_timeout_s``. At most one cut per
        ``window_s``, like every decrease.
        """
        if not self._can_decrease(now_s):
            return
        cfg = self._config
        # Cut to what was delivered, not below it: that rate did arrive (module docstring).
        self._estimate = min(self._estimate, max(delivered_kbps, 0.0))
        self._estimate = min(max(self._estimate, cfg.min_kbps), cfg.max_kbps)
        self._last_decrease_s = now_s
        self._normal_since_s = None

    def _is_new_session(self, arrival_s: float, seq: int) -> bool:
        """Tell whether the sender restarted (seq fell far back) or the cloud clock jumped back."""
        if not self._frames:
            return False
        restarted = self._max_seq is not None and seq < self._max_seq - SEQ_RESTART_GAP
        return restarted or arrival_s < self._frames[-1].arrival_s - CLOCK_JUMP_S

    def _relative_delay_ms(self, send_s: float, arrival_s: float) -> float:
        """One-way delay minus the first frame's, in ms: the clock offset cancels out."""
        delay_s = arrival_s - send_s
        if self._delay_ref_s is None:
            self._delay_ref_s = delay_s
        return (delay_s - self._delay_ref_s) * 1000.0

    def _prune(self, now_s: float) -> None:
        """Drop frames that no window (rate, trend, loss) looks at any more."""
        cfg = self._config
        keep_s = max(cfg.window_s, cfg.trend_max_span_s, cfg.loss_window_s)
        keep_n = max(cfg.trend_window, DISPERSION_FRAMES)
        while len(self._frames) > keep_n and self._frames[0].arrival_s < now_s - keep_s:
            self._frames.popleft()

    # ------------------------------------------------------------------------- detector
    def _trend_slope(self) -> float:
        """Queue-growth slope over the trend window, in ms per s (see :func:`delay_trend`)."""
        frames = list(self._frames)[-self._config.trend_window:]
        if len(frames) < MIN_TREND_FRAMES:
            return 0.0
        newest = frames[-1].arrival_s
        # The span cap keeps the trend recent, but never below the fewest frames for a fit:
        # when a filling queue slows arrivals to a trickle the detector must keep working.
        recent = [f for f in frames if f.arrival_s >= newest - self._config.trend_max_span_s]
        frames = frames[-max(len(recent), MIN_TREND_FRAMES):]
        # Times relative to the newest frame: small numbers keep the regression precise.
        return delay_trend([f.arrival_s - newest for f in frames], [f.delay_ms for f in frames],
                           [f.size_bytes for f in frames], self._config.delay_smoothing)

    def _update_state(self, dt_s: float) -> None:
        """Classify the delay trend as overuse, underuse or normal, then adapt the threshold."""
        threshold = self._threshold
        self._slope = self._trend_slope()
        self._adapt_threshold(dt_s)
        self._over_count = self._over_count + 1 if self._slope > threshold else 0
        if self._over_count >= self._config.overuse_min_frames:
            self._state = 'overuse'
        elif self._slope < -threshold:
            self._state = 'underuse'
        else:
            self._state = 'normal'

    def _adapt_threshold(self, dt_s: float) -> None:
        """Move the overuse threshold toward |trend|: fast up, slowly down, never on a jump."""
        cfg = self._config
        excess = abs(self._slope) - self._threshold
        if excess > cfg.threshold_max_step_ms_per_s:
            return
        rate = cfg.threshold_up_per_s if excess > 0.0 else cfg.threshold_down_per_s
        step = min(1.0, rate * min(dt_s, THRESHOLD_MAX_DT_S))
        self._threshold = min(max(self._threshold + step * excess, cfg.overuse_slope_ms_per_s),
                              cfg.overuse_slope_max_ms_per_s)

    # ---------------------------------------------------------------------- rate control
    def _update_rate(self, now_s: float, dt_s: float) -> None:
        """Apply the AIMD rule of the current state, then the loss rule, then the bounds."""
        cfg = self._config
        if self._state == 'overuse':
            self._normal_since_s = None
            if self._can_decrease(now_s):
                measured = self._robust_rate_kbps()
                if measured is not None:
                    self._estimate = min(self._estimate, measured)
                    self._last_decrease_s = now_s
        elif self._state == 'underuse':
            self._normal_since_s = None
        else:
            self._increase(now_s, dt_s)
        loss = self.loss_ratio
        if loss > cfg.loss_threshold and self._can_decrease(now_s):
            self._estimate *= 1.0 - 0.5 * loss
            self._last_decrease_s = now_s
        self._estimate = min(max(self._estimate, self.delivered_floor_kbps), cfg.max_kbps)

    def _can_decrease(self, now_s: float) -> bool:
        """At most one decrease per ``window_s``: each needs a fresh rate measurement."""
        return now_s - self._last_decrease_s >= self._config.window_s

    def _increase(self, now_s: float, dt_s: float) -> None:
        """Accelerating multiplicative increase toward probe_factor x the delivery rate."""
        cfg = self._config
        if self._normal_since_s is None:
            self._normal_since_s = now_s
        # Both exponents are bounded: a gap of hours (or a forged arrival stamp) must neither
        # overflow a float nor count as hours of growth, since only a window's worth of
        # arrivals is evidence of capacity.
        doublings = min((now_s - self._normal_since_s) / cfg.ramp_doubling_s, MAX_DOUBLINGS)
        rate = min(cfg.max_increase_per_s, cfg.increase_per_s * 2.0 ** doublings)
        delivered = self._rate_kbps(self._frames[-1].arrival_s - cfg.window_s)
        if delivered is None:
            return  # nothing measured yet: no evidence to grow on
        grown = self._estimate * (1.0 + rate) ** min(dt_s, cfg.window_s)
        self._estimate = max(self._estimate, min(grown, cfg.probe_factor * delivered))

    def _rate_kbps(self, start_s: float) -> Optional[float]:
        """Bytes that arrived after `start_s` (up to the newest frame) per second, in kbps.

        While the history is shorter than the window, the span starts at the first frame and that
        frame's bytes are left out (they arrived before the span began).
        """
        if not self._frames:
            return None
        end_s = self._frames[-1].arrival_s
        start_s = max(start_s, self._frames[0].arrival_s)
        span_s = end_s - start_s
        if span_s < MIN_RATE_SPAN_S:
            return None
        total = sum(f.size_bytes for f in self._frames if f.arrival_s > start_s)
        return total * 8.0 / 1000.0 / span_s

    def _robust_rate_kbps(self) -> Optional[float]:
        """Min of the window rate and the last frames' dispersion rate (module docstring)."""
        window = self._rate_kbps(self._frames[-1].arrival_s - self._config.window_s)
        recent = list(self._frames)[-DISPERSION_FRAMES:]
        dispersion = None
        span_s = recent[-1].arrival_s - recent[0].arrival_s
        if len(recent) == DISPERSION_FRAMES and span_s >= MIN_RATE_SPAN_S:
            dispersion = sum(f.size_bytes for f in recent[1:]) * 8.0 / 1000.0 / span_s
        rates = [r for r in (window, dispersion) if r is not None]
        return min(rates) if rates else None

    def _stall_decayed(self, silence_s: float) -> float:
        """Return the estimate after `silence_s` seconds without any frame."""
        excess_s = silence_s - self._config.stall_timeout_s
        if excess_s <= 0.0:
            return self._estimate
        decayed = self._estimate * self._config.decrease_factor ** excess_s
        return max(decayed, self._config.min_kbps)

    # ---------------------------------------------------------------------------- output
    def estimate_kbps(self, now_s: float) -> float:
        """Estimated uplink capacity in kbps at cloud time `now_s` (decays after a stall)."""
        if not self._frames:
            return self._estimate
        return self._stall_decayed(max(0.0, now_s - self._frames[-1].arrival_s))

    @property
    def state(self) -> str:
        """Delay-trend verdict of the newest frame: 'normal', 'overuse' or 'underuse'."""
        return self._state

    @property
    def overuse_threshold_ms_per_s(self) -> float:
        """Current (adaptive) overuse threshold of the delay trend, ms per s."""
        return self._threshold

    @property
    def trend_ms_per_s(self) -> float:
        """Latest delay-trend slope in ms of one-way delay per second."""
        return self._slope

    @property
    def delivery_rate_kbps(self) -> float:
        """Bytes delivered over the last ``window_s`` of arrivals, in kbps (0 if unknown)."""
        if not self._frames:
            return 0.0
        rate = self._rate_kbps(self._frames[-1].arrival_s - self._config.window_s)
        return 0.0 if rate is None else rate

    @property
    def delivered_floor_kbps(self) -> float:
        """What the link demonstrably carried lately, in kbps: the estimate never goes lower.

        The robust rate (the lesser of the window and the last frames' dispersion rate, see the
        module docstring), so that a window still holding frames from before a drop does not
        hold the estimate up; ``min_kbps`` if nothing is measured yet.
        """
        if not self._frames:
            return self._config.min_kbps
        rate = self._robust_rate_kbps()
        return max(self._config.min_kbps, 0.0 if rate is None else rate)

    @property
    def loss_ratio(self) -> float:
        """Fraction of sequence numbers missing among the last ``loss_window_s`` of arrivals."""
        if not self._frames:
            return 0.0
        start_s = self._frames[-1].arrival_s - self._config.loss_window_s
        seqs = {f.seq for f in self._frames if f.arrival_s >= start_s}
        expected = max(seqs) - min(seqs) + 1
        return 1.0 - len(seqs) / expected

    @property
    def frames_received(self) -> int:
        """Frames accounted for since the last reset or sender restart."""
        return self._frames_total
