"""Adaptive controller policy (AWStream-style): pick the uplink configuration to stream now.

The policy walks the profile's Pareto front (sorted by kbps, accuracy rising with it) and is
driven by :meth:`Policy.update` with the bandwidth estimate and, when known, the end-to-end
latency and the live accuracy reported by the watchdog probes. Rules, in priority order:

1. Latency guard. If the smoothed latency is above ``latency_limit_ms`` and not falling fast
   enough to be back under it within ``latency_window_s``, or if it grows faster than
   ``latency_growth_ms_per_s`` (a queue building up somewhere the bandwidth estimate does not
   see, such as the GPU), step down one entry (the best one that costs less) and block
   upgrades for ``latency_cooldown_s``. Further steps wait ``latency_window_s`` so that the
   tracker sees the effect of the last one; meanwhile rule 2 may still cut deeper.
2. Bandwidth. The budget is ``headroom * estimate``. If the current entry no longer fits,
   drop at once to the best entry that does (the cheapest if none does); a queue grows for as
   long as we wait. Only ``min_switch_interval_s`` may delay it, and not when the entry costs
   more than the whole estimate.
3. Upgrade with hysteresis. A better entry must fit in ``(1 - upgrade_margin) * budget``
   continuously for ``upgrade_hold_s``. The margin keeps an estimate that wobbles around a
   threshold from flapping; the hold keeps a brief spike from triggering a switch.
   An upgrade is also the probe of whether the link carries the next level: if it is undone
   within ``probe_window_s``, the policy goes back to the level it came from (while that fits
   the whole estimate, rather than two levels down as the post-overuse budget would say), and
   the hold for the failed level doubles (up to ``max_upgrade_hold_s``) until an upgrade to it
   sticks, so a link steady just below a level is probed ever more rarely, not every few s.
4. Accuracy watchdog. While the live agreement-mIoU is below ``accuracy_floor`` (and for
   ``accuracy_hold_s`` after the last low reading) "best" means the smallest downsampling
   scale that fits, then the highest profiled accuracy: the profile's accuracies were measured
   on other footage, and less downsampling is the robust fix when SR fails on this content.

Every call returns a :class:`Decision` with a human-readable reason; reasons of calls that
change nothing start with 'hold'.
"""
import math
from collections import deque
from dataclasses import dataclass
from typing import Deque, Dict, List, Optional, Sequence, Tuple

from cloudseg_ros.core.bandwidth import linear_slope
from cloudseg_ros.core.profile import ProfileEntry

# Fewest latency samples, and fraction of the window they must span, for a trusted slope.
MIN_LATENCY_SAMPLES = 5
MIN_LATENCY_SPAN_FRACTION = 0.5
# Durations are compared with this tolerance, so that a 3 s hold checked at 10 Hz ends after
# 30 calls and not, depending on float rounding, after 31.
TIME_EPS_S = 1e-6


def _lasted(elapsed_s: float, duration_s: float) -> bool:
    """Tell whether `elapsed_s` reaches `duration_s` (within TIME_EPS_S)."""
    return elapsed_s >= duration_s - TIME_EPS_S


@dataclass
class PolicyConfig:
    """Tuning of :class:`Policy`; the module docstring describes each rule."""

    headroom: float = 0.8  # use at most this fraction of the estimated bandwidth
    upgrade_hold_s: float = 3.0  # a better entry must fit this long before switching up
    upgrade_margin: float = 0.1  # ...and fit within (1 - margin) of the budget
    downgrade_immediately: bool = True  # False: a shortfall must also last upgrade_hold_s
    latency_limit_ms: float = 400.0  # smoothed end-to-end latency allowed
    latency_growth_ms_per_s: float = 100.0  # latency growth that counts as a building queue
    latency_window_s: float = 2.0  # latency trend window, also the wait between latency steps
    latency_cooldown_s: float = 5.0  # no upgrades for this long after a latency step
    accuracy_floor: float = 0.0  # live agreement-mIoU below which smaller scales are preferred
    accuracy_hold_s: float = 10.0  # the watchdog mode lasts this long after a low reading
    min_switch_interval_s: float = 1.0  # fewest seconds between two switches
    probe_window_s: float = 10.0  # an upgrade undone sooner than this counts as failed
    max_upgrade_hold_s: float = 60.0  # cap of the hold after repeated failed upgrades

    def validate(self) -> None:
        """Raise ValueError naming the first field that is out of range."""
        if not 0.0 < self.headroom <= 1.0:
            raise ValueError(f'headroom must be in (0, 1], got {self.headroom}')
        if not 0.0 <= self.upgrade_margin < 1.0:
            raise ValueError(f'upgrade_margin must be in [0, 1), got {self.upgrade_margin}')
        if not 0.0 <= self.accuracy_floor <= 1.0:
            raise ValueError(f'accuracy_floor must be in [0, 1], got {self.accuracy_floor}')
        for name in ('latency_limit_ms', 'latency_growth_ms_per_s', 'latency_window_s'):
            if not getattr(self, name) > 0.0:
                raise ValueError(f'{name} must be > 0, got {getattr(self, name)}')
        for name in ('upgrade_hold_s', 'latency_cooldown_s', 'accuracy_hold_s',
                     'min_switch_interval_s', 'probe_window_s'):
            if not getattr(self, name) >= 0.0:
                raise ValueError(f'{name} must be >= 0, got {getattr(self, name)}')
        if not self.max_upgrade_hold_s >= self.upgrade_hold_s:
            raise ValueError(f'max_upgrade_hold_s ({self.max_upgrade_hold_s}) must be >= '
                             f'upgrade_hold_s ({self.upgrade_hold_s})')
        if not isinstance(self.downgrade_immediately, bool):
            raise ValueError(f'downgrade_immediately must be a bool, '
                             f'got {self.downgrade_immediately!r}')


@dataclass
class _Probe:
    """An upgrade not yet known to be sustainable."""

    level: int  # front index upgraded to
    origin: int  # front index upgraded from
    since_s: float


@dataclass
class Decision:
    """The policy's answer to one update: the entry to stream and why."""

    entry: ProfileEntry
    changed: bool  # True if `entry` differs from the previous decision's (or is the first)
    reason: str  # human-readable; starts with 'hold' when nothing changed
    budget_kbps: float  # headroom * bandwidth estimate used for this decision


class LatencyTracker:
    """Smoothed level (EWMA) and trend (regression slope) of end-to-end latency samples."""

    def __init__(self, window_s: float = 2.0, time_constant_s: float = 0.5) -> None:
        """`window_s`: span of the slope regression; `time_constant_s`: EWMA time constant."""
        if not (window_s > 0.0 and time_constant_s > 0.0):
            raise ValueError('window_s and time_constant_s must be > 0')
        self.window_s = window_s
        self.time_constant_s = time_constant_s
        self.reset()

    def reset(self) -> None:
        """Forget all samples."""
        self._samples: Deque[Tuple[float, float]] = deque()
        self._smoothed: Optional[float] = None

    def add(self, now_s: float, latency_ms: float) -> None:
        """Add one sample; samples may be irregular, the EWMA weighs them by elapsed time."""
        if self._smoothed is None or not self._samples:
            self._smoothed = latency_ms
        else:
            dt_s = max(0.0, now_s - self._samples[-1][0])
            alpha = 1.0 - math.exp(-dt_s / self.time_constant_s)
            self._smoothed += alpha * (latency_ms - self._smoothed)
        self._samples.append((now_s, latency_ms))
        while self._samples[0][0] < now_s - self.window_s:
            self._samples.popleft()

    @property
    def smoothed_ms(self) -> Optional[float]:
        """EWMA of the latency in ms, None before the first sample."""
        return self._smoothed

    @property
    def slope_ms_per_s(self) -> float:
        """Latency trend over the window in ms per s; 0.0 until enough samples span it."""
        if len(self._samples) < MIN_LATENCY_SAMPLES:
            return 0.0
        span_s = self._samples[-1][0] - self._samples[0][0]
        if span_s < MIN_LATENCY_SPAN_FRACTION * self.window_s:
            return 0.0
        return linear_slope([t for t, _ in self._samples], [v for _, v in self._samples])


def _finite_or_none(value: Optional[float]) -> Optional[float]:
    """None for None and NaN (messages use NaN for 'not measured')."""
    return None if value is None or math.isnan(value) else value


class Policy:
    """Chooses a profile entry from bandwidth, latency and live accuracy (module docstring)."""

    def __init__(self, front: Sequence[ProfileEntry],
                 config: Optional[PolicyConfig] = None) -> None:
        """`front`: the entries to choose from, in any order (sorted by kbps here).

        Normally the profile's Pareto front. Passing all profiled entries instead changes
        nothing in normal operation (an entry that is dominated never beats the one dominating
        it, which costs no more), but lets the accuracy watchdog use smaller-scale
        configurations that are off the front.
        """
        if not front:
            raise ValueError('the policy needs at least one profile entry')
        self._front: List[ProfileEntry] = sorted(front, key=lambda e: (e.kbps, -e.accuracy))
        self._config = config or PolicyConfig()
        self._config.validate()
        self._latency = LatencyTracker(self._config.latency_window_s)
        self.reset()

    def reset(self) -> None:
        """Forget the current entry and all history; the next update chooses afresh."""
        self._index: Optional[int] = None
        self._last_switch_s = -math.inf
        self._last_down_s = -math.inf
        self._better_since_s: Optional[float] = None
        self._short_since_s: Optional[float] = None
        self._cooldown_until_s = -math.inf
        self._live_accuracy: Optional[float] = None
        self._accuracy_low_until_s = -math.inf
        self._fails: Dict[int, int] = {}  # front index -> failed upgrades to it in a row
        self._probe: Optional[_Probe] = None  # the last upgrade, until it is settled
        self._fallback: Optional[Tuple[int, float]] = None  # (origin index, grace end)
        self._latency.reset()

    # ---------------------------------------------------------------------- accessors
    @property
    def config(self) -> PolicyConfig:
        """The active configuration (replace it with :meth:`set_config`)."""
        return self._config

    def set_config(self, config: PolicyConfig) -> None:
        """Validate and apply a new configuration live; the current entry is kept."""
        config.validate()
        self._config = config
        self._latency.window_s = config.latency_window_s

    @property
    def front(self) -> Tuple[ProfileEntry, ...]:
        """The entries the policy chooses from, by increasing kbps."""
        return tuple(self._front)

    @property
    def current(self) -> Optional[ProfileEntry]:
        """The entry of the last decision, None before the first update."""
        return None if self._index is None else self._front[self._index]

    @property
    def latency_ms(self) -> Optional[float]:
        """Smoothed end-to-end latency in ms, None before any sample."""
        return self._latency.smoothed_ms

    @property
    def latency_slope_ms_per_s(self) -> float:
        """Trend of the end-to-end latency, ms per s."""
        return self._latency.slope_ms_per_s

    @property
    def live_accuracy(self) -> Optional[float]:
        """Last live agreement-mIoU reported, None before any."""
        return self._live_accuracy

    def accuracy_mode(self, now_s: float) -> bool:
        """Tell whether the accuracy watchdog prefers smaller scales at `now_s`."""
        return not _lasted(now_s, self._accuracy_low_until_s)

    # ------------------------------------------------------------------------- update
    def update(self, now_s: float, bandwidth_kbps: float, latency_ms: Optional[float] = None,
               live_accuracy: Optional[float] = None) -> Decision:
        """Decide which entry to stream at time `now_s` (seconds, one clock throughout).

        `bandwidth_kbps`: current estimate. `latency_ms`: a new end-to-end latency sample, and
        `live_accuracy`: a new probe's agreement-mIoU in [0, 1]; pass None (or NaN) when there
        is no new sample, the policy remembers what it has seen. Call it on every estimate
        update or from a timer; it is cheap.
        """
        if not (math.isfinite(bandwidth_kbps) and bandwidth_kbps >= 0.0):
            raise ValueError(f'bandwidth_kbps must be finite and >= 0, got {bandwidth_kbps}')
        latency_ms = _finite_or_none(latency_ms)
        if latency_ms is not None:
            self._latency.add(now_s, latency_ms)
        self._note_accuracy(now_s, _finite_or_none(live_accuracy))
        budget = self._config.headroom * bandwidth_kbps
        if self._index is None:
            return self._initial(now_s, budget)
        self._settle_probe(now_s)
        for rule in (self._latency_rule, self._bandwidth_rule, self._upgrade_rule):
            decision = rule(now_s, bandwidth_kbps, budget)
            if decision is not None:
                return decision
        return self._hold('hold', budget)

    def _note_accuracy(self, now_s: float, live_accuracy: Optional[float]) -> None:
        """Remember a live accuracy reading; a low one (re)starts the watchdog mode."""
        if live_accuracy is None:
            return
        self._live_accuracy = live_accuracy
        if live_accuracy < self._config.accuracy_floor:
            self._accuracy_low_until_s = now_s + self._config.accuracy_hold_s

    def _initial(self, now_s: float, budget: float) -> Decision:
        """First decision: the best entry that fits, without waiting for any hold."""
        index = self._best_fit(now_s, budget)
        entry = self._front[index]
        if entry.kbps <= budget:
            reason = f'initial: {entry.name} ({entry.kbps:.0f} kbps) fits {budget:.0f} kbps'
        else:
            reason = f'initial: nothing fits {budget:.0f} kbps, cheapest {entry.name}'
        return self._switch(now_s, index, reason, budget)

    # -------------------------------------------------------------------------- rules
    def _latency_rule(self, now_s: float, bandwidth_kbps: float,
                      budget: float) -> Optional[Decision]:
        """Step down one entry when latency is too high or growing (module docstring, 1)."""
        cfg = self._config
        level = self._latency.smoothed_ms
        slope = self._latency.slope_ms_per_s
        if level is None:
            return None
        projected = level + slope * cfg.latency_window_s
        if level > cfg.latency_limit_ms and projected > cfg.latency_limit_ms:
            reason = f'latency {level:.0f} ms > {cfg.latency_limit_ms:.0f} ms'
        elif slope > cfg.latency_growth_ms_per_s:
            reason = f'latency {level:.0f} ms growing {slope:.0f} ms/s'
        else:
            return None
        # Keep upgrades blocked for as long as the problem lasts, then for the cool-down.
        self._cooldown_until_s = now_s + cfg.latency_cooldown_s
        # At the bottom, or while the last step down has not had time to show in the latency,
        # leave the decision to the bandwidth rule (which may want a bigger step).
        settling = not _lasted(now_s - self._last_down_s,
                               max(cfg.latency_window_s, cfg.min_switch_interval_s))
        current_kbps = self._front[self._index].kbps
        cheaper = [i for i, entry in enumerate(self._front) if entry.kbps < current_kbps]
        if not cheaper or settling:
            return None
        target = self._best_of(now_s, cheaper)
        return self._switch(now_s, target, f'{reason}: step down to {self._front[target].name}',
                            budget)

    def _bandwidth_rule(self, now_s: float, bandwidth_kbps: float,
                        budget: float) -> Optional[Decision]:
        """Drop to the best fitting entry when the current one exceeds the budget (rule 2)."""
        entry = self._front[self._index]
        if entry.kbps <= budget or self._in_fallback_grace(now_s, bandwidth_kbps):
            self._short_since_s = None
            return None
        if self._short_since_s is None:
            self._short_since_s = now_s
        shortfall = (f'bandwidth {bandwidth_kbps:.0f} kbps < '
                     f'{entry.kbps / self._config.headroom:.0f} kbps needed')
        target = self._fallback_target(bandwidth_kbps)
        if target is not None:
            action = f'upgrade failed, back to {self._front[target].name}'
        else:
            target = self._best_fit(now_s, budget)
            action = f'down to {self._front[target].name}'
        if target == self._index:
            return self._hold(f'hold: {shortfall}, already at the cheapest entry', budget)
        wait = self._downgrade_wait(now_s, entry.kbps > bandwidth_kbps)
        if wait:
            return self._hold(f'hold: {shortfall}, {wait}', budget)
        return self._switch(now_s, target, f'{shortfall}: {action}', budget)

    def _downgrade_wait(self, now_s: float, emergency: bool) -> str:
        """Why a needed downgrade must wait ('' if it need not)."""
        cfg = self._config
        # Sending more than the whole estimate fills a queue: no timer may delay that fix.
        if emergency:
            return ''
        short_s = now_s - self._short_since_s
        if not cfg.downgrade_immediately and not _lasted(short_s, cfg.upgrade_hold_s):
            return f'short for {short_s:.1f}/{cfg.upgrade_hold_s:.1f} s'
        if not _lasted(now_s - self._last_switch_s, cfg.min_switch_interval_s):
            return 'min switch interval'
        return ''

    def _upgrade_rule(self, now_s: float, bandwidth_kbps: float,
                      budget: float) -> Optional[Decision]:
        """Switch to a better entry once it has fitted long enough (rules 3 and 4)."""
        cfg = self._config
        if not _lasted(now_s, self._cooldown_until_s):
            self._better_since_s = None
            left_s = self._cooldown_until_s - now_s
            return self._hold(f'hold: latency cool-down, {left_s:.1f} s left', budget)
        limit = budget * (1.0 - cfg.upgrade_margin)
        better = [i for i, entry in enumerate(self._front)
                  if entry.kbps <= limit and self._prefers(now_s, i, self._index)]
        if not better:
            self._better_since_s = None
            return None
        if self._better_since_s is None:
            self._better_since_s = now_s
        held_s = now_s - self._better_since_s
        # The best candidate may still be under a failed-upgrade backoff: take the best one
        # whose hold is over (e.g. the level below the one that failed).
        ready = [i for i in better if _lasted(held_s, self._hold_for(i))]
        if not ready:
            best = self._best_of(now_s, better)
            return self._hold(f'hold: {self._front[best].name} fits, '
                              f'{held_s:.1f}/{self._hold_for(best):.1f} s', budget)
        target = self._best_of(now_s, ready)
        name = self._front[target].name
        if not _lasted(now_s - self._last_switch_s, cfg.min_switch_interval_s):
            return self._hold(f'hold: {name} fits, min switch interval', budget)
        # An upgrade is the probe of the new level (rule 3); a lateral watchdog move is not.
        more_expensive = self._front[target].kbps > self._front[self._index].kbps
        self._probe = _Probe(target, self._index, now_s) if more_expensive else None
        if self.accuracy_mode(now_s):
            reason = (f'accuracy watchdog (live {self._live_accuracy:.2f}, floor '
                      f'{cfg.accuracy_floor:.2f}): smaller scale, switch to {name}')
        else:
            reason = f'bandwidth {bandwidth_kbps:.0f} kbps fits {name} for {held_s:.1f} s: up'
        return self._switch(now_s, target, reason, budget)

    # ------------------------------------------------------------------------ helpers
    def _rank(self, now_s: float, index: int) -> Tuple[float, ...]:
        """Sort key of 'better': accuracy, or smallest scale first in watchdog mode."""
        entry = self._front[index]
        if self.accuracy_mode(now_s):
            return (-entry.config.scale, entry.accuracy, -entry.kbps)
        return (entry.accuracy, -entry.kbps)

    def _best_fit(self, now_s: float, limit_kbps: float) -> int:
        """Index of the best entry costing at most `limit_kbps`, else of the cheapest."""
        fitting = [i for i, entry in enumerate(self._front) if entry.kbps <= limit_kbps]
        return self._best_of(now_s, fitting) if fitting else 0

    def _best_of(self, now_s: float, indices: Sequence[int]) -> int:
        """Return the best-ranked of the given entry indices."""
        return max(indices, key=lambda i: self._rank(now_s, i))

    def _prefers(self, now_s: float, candidate: int, current: int) -> bool:
        """Tell whether `candidate` ranks strictly above `current`."""
        return self._rank(now_s, candidate) > self._rank(now_s, current)

    def _hold_for(self, target: int) -> float:
        """Upgrade hold to `target`: doubled per failed upgrade to any level on the way."""
        cfg = self._config
        fails = max((self._fails.get(i, 0) for i in range(self._index + 1, target + 1)),
                    default=0)
        return min(cfg.max_upgrade_hold_s, cfg.upgrade_hold_s * 2.0 ** fails)

    def _settle_probe(self, now_s: float) -> None:
        """Close the last upgrade's probe window; if it lasted, clear failures up to its level."""
        probe = self._probe
        if probe is None or not _lasted(now_s - probe.since_s, self._config.probe_window_s):
            return
        if self._index >= probe.level:
            for index in range(probe.level + 1):
                self._fails.pop(index, None)
        self._probe = None

    def _fallback_target(self, bandwidth_kbps: float) -> Optional[int]:
        """Return the level a failing upgrade came from if the link still carries it, else None.

        The estimate after an overuse is 0.85 x the delivery rate and the budget 0.8 x that, so
        the best fit is usually two levels below the failed one, although the origin was carried
        fine seconds ago. Going back to the origin (AWStream's failed-probe rule) and tolerating
        it for ``probe_window_s`` while it fits the whole estimate saves a needless down-and-up.
        """
        probe = self._probe
        if probe is None or self._index != probe.level:
            return None
        if self._front[probe.origin].kbps > bandwidth_kbps:
            return None
        return probe.origin

    def _in_fallback_grace(self, now_s: float, bandwidth_kbps: float) -> bool:
        """Tell whether the current entry is a failed upgrade's origin within its grace."""
        if self._fallback is None:
            return False
        index, until_s = self._fallback
        return (index == self._index and not _lasted(now_s, until_s)
                and self._front[index].kbps <= bandwidth_kbps)

    def _judge_probe(self, index: int) -> None:
        """On a step down to `index`: undoing the last upgrade within its window is a failure.

        A capacity drop just after an upgrade is counted too (the two look the same from here);
        that costs one doubled hold for that level, which the next successful upgrade clears.
        """
        probe = self._probe
        if probe is not None and index < probe.level <= self._index:
            self._fails[probe.level] = self._fails.get(probe.level, 0) + 1
        self._probe = None

    def _switch(self, now_s: float, index: int, reason: str, budget: float) -> Decision:
        """Make `index` current and return the decision."""
        self._fallback = None
        if self._index is not None and index < self._index:
            self._last_down_s = now_s
            probe = self._probe
            if probe is not None and (self._index, index) == (probe.level, probe.origin):
                self._fallback = (index, now_s + self._config.probe_window_s)
            self._judge_probe(index)
        self._index = index
        self._last_switch_s = now_s
        self._better_since_s = None
        self._short_since_s = None
        return Decision(self._front[index], True, reason, budget)

    def _hold(self, reason: str, budget: float) -> Decision:
        """Keep the current entry."""
        return Decision(self._front[self._index], False, reason, budget)
