"""Token-bucket rate limits for what peers send (frames, key-frame requests), without ROS.

A bucket holds up to `burst` tokens and refills at `rate_hz`; each accepted event takes one.
Steady traffic at or below the rate always passes, short bursts up to `burst` pass, and a flood
is cut to the rate. Time is any monotonic clock in seconds, passed in (testable, and never the
ROS clock, which stops under `use_sim_time` without `/clock`).
"""
import math


class TokenBucket:
    """At most `rate_hz` events per second on average, bursts of up to `burst`."""

    def __init__(self, rate_hz: float, burst: float = 1.0) -> None:
        if not (math.isfinite(rate_hz) and rate_hz > 0):
            raise ValueError(f'rate_hz must be a positive number, got {rate_hz!r}')
        if not (math.isfinite(burst) and burst >= 1):
            raise ValueError(f'burst must be >= 1, got {burst!r}')
        self.rate_hz = float(rate_hz)
        self.burst = float(burst)
        self._tokens = self.burst
        self._last_s = None
        self.refused = 0

    def allow(self, now_s: float) -> bool:
        """Take a token if one is there (True); count a refusal otherwise."""
        if self._last_s is not None:
            elapsed_s = max(0.0, now_s - self._last_s)  # a clock step back refills nothing
            self._tokens = min(self.burst, self._tokens + elapsed_s * self.rate_hz)
        self._last_s = now_s
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self.refused += 1
        return False
