"""Pacing a recording: when each recorded frame is due, at the recorded rate times `rate`.

The first frame is due at once; each later one when as much time, divided by `rate`, has passed
since the anchor as between their log times. A log time that goes backwards (the recording
looped) or a player that fell far behind re-anchors at the present frame instead of bursting
through the backlog, the way a camera would rather drop time than send a flood.
"""
from typing import Optional


class Pacer:
    """Due times (seconds on a monotonic clock) of recorded frames."""

    def __init__(self, rate: float = 1.0, max_lag_s: float = 0.25) -> None:
        if not rate > 0:
            raise ValueError(f'playback rate must be > 0, got {rate}')
        self.rate = rate
        self.max_lag_s = max_lag_s
        self.reanchored = 0  # times the player was late or the recording looped
        self._anchor: Optional[tuple] = None  # (now_s, log_time_ns) of the anchor frame
        self._last_log_ns: Optional[int] = None

    def due_s(self, log_time_ns: int, now_s: float) -> float:
        """When the frame logged at `log_time_ns` should be played (now_s or later)."""
        backwards = self._last_log_ns is not None and log_time_ns < self._last_log_ns
        self._last_log_ns = log_time_ns
        if self._anchor is None or backwards:
            self._anchor = (now_s, log_time_ns)
            return now_s
        due = self._anchor[0] + (log_time_ns - self._anchor[1]) * 1e-9 / self.rate
        if now_s - due > self.max_lag_s:
            self.reanchored += 1
            self._anchor = (now_s, log_time_ns)
            return now_s
        return due
