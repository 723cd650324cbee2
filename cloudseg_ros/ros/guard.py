"""One guarded entry for every node callback: no exception ends a node.

rclpy lets an exception raised in a subscription, timer or future callback propagate out of
`spin()`, which ends the process: one message that reaches an unforeseen error path would take
a robot's or the whole fleet's node down. Every node therefore registers its callbacks through
`CallbackGuard.wrap()`, which turns an exception into a dropped message: the error is counted
(`errors`, and the node's own counter through `on_error`, which the stats messages report)
and logged at most once per `log_period_s` per callback, with the number suppressed since.
Expected rejections (bad frames, unknown codecs) stay where they are handled today, with their
reasons; this is the net under everything else.
"""
import functools
import threading
import time
from typing import Callable, Dict, Optional, Tuple

from cloudseg_ros.core.peer_input import printable

LOG_PERIOD_S = 2.0
MAX_ERROR_CHARS = 300  # exception texts may quote what a peer sent


class CallbackGuard:
    """Wraps callbacks so that an exception is logged (throttled), counted and dropped."""

    def __init__(self, logger, log_period_s: float = LOG_PERIOD_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`logger` has `.error(str)` (a node's `get_logger()`); `clock` gives seconds."""
        self._logger = logger
        self._log_period_s = log_period_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last_log: Dict[str, Tuple[float, int]] = {}  # name -> (logged at, suppressed)
        self.errors = 0

    def wrap(self, name: str, callback: Callable,
             on_error: Optional[Callable[[], None]] = None) -> Callable:
        """Return `callback` guarded; `name` says in the log which callback failed."""
        @functools.wraps(callback)
        def guarded(*args, **kwargs):
            try:
                return callback(*args, **kwargs)
            except Exception as err:  # noqa: B902 - the net under every other handler
                self._failed(name, err, on_error)
                return None
        return guarded

    def _failed(self, name: str, err: Exception, on_error: Optional[Callable[[], None]]) -> None:
        with self._lock:
            self.errors += 1
            now_s = self._clock()
            last_s, suppressed = self._last_log.get(name, (-float('inf'), 0))
            if now_s - last_s < self._log_period_s:
                self._last_log[name] = (last_s, suppressed + 1)
                log = False
            else:
                self._last_log[name] = (now_s, 0)
                log = True
        if on_error is not None:
            on_error()
        if log:
            more = f' ({suppressed} more since the last report)' if suppressed else ''
            text = printable(f'{type(err).__name__}: {err}', MAX_ERROR_CHARS)
            self._logger.error(f'{name}: input dropped after an unexpected error: {text}{more}')
