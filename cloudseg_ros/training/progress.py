"""Flushed progress lines for long jobs: counts, rate, ETA and the latest metrics.

Lines rather than a carriage-return bar so logs piped through `tee` (device jobs, CI) stay
readable.
"""
import sys
import time
from typing import Dict, Optional, TextIO


def format_duration(seconds: float) -> str:
    """12.3 -> '12s', 754 -> '12m34s', 7300 -> '2h01m'."""
    if seconds != seconds or seconds == float('inf'):
        return '?'
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f'{seconds:.0f}s'
    if seconds < 3600:
        return f'{int(seconds // 60)}m{int(seconds % 60):02d}s'
    return f'{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m'


class Progress:
    """Prints `label step/total | k=v ... | rate | elapsed | ETA` every `every` updates.

    `time_budget_s`, when set, also bounds the ETA: jobs that stop on a time budget finish at
    whichever limit comes first.
    """

    def __init__(self, total: int, label: str = '', every: int = 1, unit: str = 'it',
                 time_budget_s: Optional[float] = None, stream: Optional[TextIO] = None,
                 start_count: int = 0) -> None:
        self.total = max(1, int(total))
        self.label = label
        self.every = max(1, int(every))
        self.unit = unit
        self.time_budget_s = time_budget_s
        self.stream = stream or sys.stdout
        self.start = time.perf_counter()
        self.start_count = start_count
        self.count = start_count

    def elapsed(self) -> float:
        """Seconds since this progress started."""
        return time.perf_counter() - self.start

    def line(self, values: Optional[Dict[str, float]] = None) -> str:
        """Return the progress line for the current count (without printing)."""
        elapsed = self.elapsed()
        done = self.count - self.start_count
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.count) / rate if rate > 0 else float('inf')
        if self.time_budget_s is not None:
            eta = min(eta, max(0.0, self.time_budget_s - elapsed))
        parts = [f'{self.label} {self.count}/{self.total}'.strip()]
        if values:
            parts.append(' '.join(f'{k}={_fmt(v)}' for k, v in values.items()))
        parts.append(f'{rate:.2f} {self.unit}/s')
        parts.append(f'elapsed {format_duration(elapsed)}')
        parts.append(f'ETA {format_duration(eta)}')
        return ' | '.join(parts)

    def update(self, n: int = 1, values: Optional[Dict[str, float]] = None,
               force: bool = False) -> None:
        """Advance by `n`; print when the count hits the interval, the end, or `force`."""
        self.count += n
        if force or self.count % self.every == 0 or self.count >= self.total:
            self.write(self.line(values))

    def write(self, text: str) -> None:
        """Print one flushed line."""
        print(text, file=self.stream, flush=True)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f'{value:.4g}'
    return str(value)
