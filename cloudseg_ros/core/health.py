"""Health of the three nodes as plain status reports (ros/diagnostics.py publishes them).

No rclpy here: each node hands its counters to a small tracker once per report period, and the
tracker turns them into a `StatusReport` (name, hardware id, level, message, key/value pairs),
the content of one diagnostic_msgs/DiagnosticStatus. Rates are counter differences between two
reports, so they need no callback of their own.

Levels (the values of DiagnosticStatus.OK / WARN / ERROR):
- cloud, per robot: ERROR when no engine is loaded (every frame is rejected); WARN when frames
  arrived in the last `stale_s` but no mask was published in that time, or when frames were
  rejected since the last report; OK otherwise (also while the robot sends nothing).
- edge: WARN when no camera image came in the last `stale_s`, when images come but none was
  sent in that time, or when images were rejected since the last report; OK otherwise.
- controller: ERROR without a profile (nothing is retuned); WARN while the edge has not
  acknowledged the chosen configuration (decisions applied but not running); OK otherwise.
"""
from dataclasses import dataclass, field
import threading
from typing import List, Optional, Sequence, Tuple

import numpy as np

OK, WARN, ERROR = 0, 1, 2  # diagnostic_msgs/DiagnosticStatus levels
STALE_S = 5.0  # seconds without a mask (or a sent frame) while inputs arrive -> WARN
LATENCY_WINDOW = 64  # recent mask latencies kept for the median


@dataclass
class StatusReport:
    """One component's health: what a DiagnosticStatus carries."""

    name: str
    hardware_id: str
    level: int
    message: str
    values: List[Tuple[str, str]] = field(default_factory=list)


def _worst(problems: Sequence[Tuple[int, str]], ok_message: str) -> Tuple[int, str]:
    """(level, message) of the worst problem, all problems' messages joined; OK if none."""
    if not problems:
        return OK, ok_message
    return max(level for level, _ in problems), '; '.join(text for _, text in problems)


class _Counter:
    """A growing counter sampled at each report: its rate and when it last grew."""

    def __init__(self) -> None:
        self.grew = False  # grew between the last two samples
        self.last_growth_s: Optional[float] = None
        self._prev: Optional[Tuple[float, int]] = None

    def sample(self, now_s: float, value: int) -> float:
        """Record the counter now; return its growth per second since the last sample."""
        rate = 0.0
        if self._prev is not None and now_s > self._prev[0]:
            rate = max(0, value - self._prev[1]) / (now_s - self._prev[0])
        if value > (self._prev[1] if self._prev else 0):
            self.last_growth_s = now_s
        self.grew = self._prev is not None and value > self._prev[1]
        self._prev = (now_s, value)
        return rate

    def recent(self, now_s: float, window_s: float) -> bool:
        """Whether it grew within the last `window_s` (at report resolution)."""
        return self.last_growth_s is not None and now_s - self.last_growth_s <= window_s


def _fmt(value: float, digits: int = 1) -> str:
    return 'nan' if value is None or not np.isfinite(value) else f'{value:.{digits}f}'


@dataclass(frozen=True)
class StreamCounters:
    """What the cloud counts for one robot (totals since the stream started)."""

    frames_in: int
    rejected: int
    superseded: int
    lost: int


class CloudStreamHealth:
    """One robot's stream on the cloud: masks published (any thread) and report rules."""

    def __init__(self, robot: str, stale_s: float = STALE_S) -> None:
        self.robot = robot
        self.stale_s = stale_s
        self._lock = threading.Lock()  # masks are counted on engine threads
        self._masks = 0
        self._latencies_ms: List[float] = []
        self._frames, self._rejected, self._mask_counter = _Counter(), _Counter(), _Counter()

    def on_mask(self, latency_ms: float) -> None:
        """Count one published mask and its latency (acquisition stamp -> publication)."""
        with self._lock:
            self._masks += 1
            self._latencies_ms = (self._latencies_ms + [latency_ms])[-LATENCY_WINDOW:]

    def report(self, now_s: float, counts: StreamCounters, engine_state: str) -> StatusReport:
        """The stream's status now; `engine_state` is 'loaded' or why not."""
        with self._lock:
            masks, latencies = self._masks, list(self._latencies_ms)
        frame_rate = self._frames.sample(now_s, counts.frames_in)
        mask_rate = self._mask_counter.sample(now_s, masks)
        self._rejected.sample(now_s, counts.rejected)
        problems = []
        if engine_state != 'loaded':
            problems.append((ERROR, f'engine not loaded: {engine_state}'))
        if (self._frames.recent(now_s, self.stale_s)
                and not self._mask_counter.recent(now_s, self.stale_s)):
            problems.append((WARN, f'frames arrive but no mask in {self.stale_s:g} s'))
        if self._rejected.grew:
            problems.append((WARN, 'frames rejected'))
        idle = 'serving' if masks else 'waiting for frames'
        level, message = _worst(problems, idle)
        p50 = float(np.median(latencies)) if latencies else float('nan')
        return StatusReport(f'cloudseg cloud: {self.robot}', self.robot, level, message, [
            ('masks_per_s', _fmt(mask_rate)), ('frames_in_per_s', _fmt(frame_rate)),
            ('latency_p50_ms', _fmt(p50)), ('masks', str(masks)),
            ('frames_in', str(counts.frames_in)), ('frames_rejected', str(counts.rejected)),
            ('frames_superseded', str(counts.superseded)), ('frames_lost', str(counts.lost)),
            ('engine', engine_state)])


@dataclass(frozen=True)
class EdgeCounters:
    """What the edge counts (totals) and the encoding it runs now."""

    frames_in: int
    frames_out: int
    bytes_out: int
    rejected: int
    scale: int
    codec: str
    quality: int


class EdgeHealth:
    """The robot's edge node: camera in, uplink out, report rules."""

    def __init__(self, name: str, stale_s: float = STALE_S) -> None:
        self.name = name
        self.stale_s = stale_s
        self._in, self._out, self._bytes, self._rejected = (_Counter(), _Counter(), _Counter(),
                                                            _Counter())
        self._start_s: Optional[float] = None

    def report(self, now_s: float, counts: EdgeCounters) -> StatusReport:
        """The edge's status now."""
        self._start_s = now_s if self._start_s is None else self._start_s
        in_rate = self._in.sample(now_s, counts.frames_in)
        out_rate = self._out.sample(now_s, counts.frames_out)
        kbps = self._bytes.sample(now_s, counts.bytes_out) * 8e-3
        self._rejected.sample(now_s, counts.rejected)
        problems = []
        camera_quiet = not self._in.recent(now_s, self.stale_s)
        if camera_quiet and now_s - self._start_s >= self.stale_s:
            problems.append((WARN, f'no camera image in {self.stale_s:g} s'))
        elif not camera_quiet and not self._out.recent(now_s, self.stale_s) \
                and now_s - self._start_s >= self.stale_s:
            problems.append((WARN, f'camera images arrive but none sent in {self.stale_s:g} s'))
        if self._rejected.grew:
            problems.append((WARN, 'camera images rejected'))
        level, message = _worst(problems, 'streaming' if counts.frames_out else 'starting')
        return StatusReport(f'cloudseg edge: {self.name}', self.name, level, message, [
            ('frames_in_per_s', _fmt(in_rate)), ('frames_out_per_s', _fmt(out_rate)),
            ('uplink_kbps', _fmt(kbps)), ('scale', str(counts.scale)), ('codec', counts.codec),
            ('quality', str(counts.quality)), ('frames_in', str(counts.frames_in)),
            ('frames_out', str(counts.frames_out)), ('frames_rejected', str(counts.rejected))])


def controller_report(name: str, estimate_kbps: Optional[float], entry: Optional[str],
                      last_switch: str, edge_acknowledged: bool, enabled: bool,
                      profile_error: str = '', edge_status: str = '') -> StatusReport:
    """The controller's status: estimate, chosen entry, why it last switched.

    `edge_status` says why the edge does not run the entry (unreachable, a refusal).
    """
    problems = []
    if profile_error:
        problems.append((ERROR, f'no profile, the edge is not retuned: {profile_error}'))
    elif enabled and not edge_acknowledged:
        problems.append((WARN, 'the edge does not run the chosen configuration'
                         + (f': {edge_status}' if edge_status else '')))
    running = 'running ' + (entry or '-') if enabled else 'advising ' + (entry or '-')
    level, message = _worst(problems, running)
    return StatusReport(f'cloudseg controller: {name}', name, level, message, [
        ('bandwidth_estimate_kbps', _fmt(estimate_kbps)), ('entry', entry or ''),
        ('last_switch_reason', last_switch), ('edge_acknowledged', str(edge_acknowledged)),
        ('enabled', str(enabled))])
