"""Keeping a remote node's parameters at wanted values, without ROS: the controller's edge sync.

The controller asks the edge node to run a configuration through the edge's parameter
services. Any of that can go wrong: the edge is not up yet, a request is lost, the edge refuses
a value (its on-set callback has the last word, e.g. `max_rate_hz` below its read-only
`min_rate_hz`), the edge restarts with its own defaults, or someone else sets a parameter.
So nothing is assumed: the edge's values are read back (`get_parameters`) after every set and
every `verify_period_s`, only the parameters that differ are sent, failed or unanswered
requests are retried with a bounded exponential backoff, and `running` is always what the edge
last said it runs. The node turns `next_request()` into service calls and feeds the answers
back; this module decides when and what.
"""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple


@dataclass(frozen=True)
class SyncConfig:
    """Timing of the sync, seconds."""

    timeout_s: float = 2.0  # a request unanswered this long has failed
    first_retry_s: float = 0.5  # wait after the first failure; doubled per failure in a row
    max_retry_s: float = 8.0  # longest wait between two attempts
    verify_period_s: float = 2.0  # read the values back this often while in sync

    def backoff_s(self, failures: int) -> float:
        """Wait before the next attempt after `failures` failures in a row (0: none)."""
        if failures <= 0:
            return 0.0
        return min(self.max_retry_s, self.first_retry_s * 2.0 ** (failures - 1))


@dataclass(frozen=True)
class Request:
    """One service call to make: 'set' `values`, or 'get' the values of `names`."""

    kind: str
    values: Dict[str, Any] = field(default_factory=dict)  # set only
    names: Tuple[str, ...] = ()  # get only


@dataclass(frozen=True)
class Refusal:
    """A value the remote node refused, with its reason."""

    name: str
    value: Any
    reason: str

    def __str__(self) -> str:
        return f'{self.name}={self.value!r}: {self.reason}'


class ParamSync:
    """Decides which request keeps a remote node at the wanted values; tracks what it runs."""

    def __init__(self, names: Sequence[str], config: Optional[SyncConfig] = None) -> None:
        """`names`: every parameter read back (a superset of any wanted dict's keys)."""
        self.names = tuple(names)
        self.config = config or SyncConfig()
        self.running: Optional[Dict[str, Any]] = None  # read back; None: not known
        self.refused: Dict[str, Refusal] = {}  # last refusal per parameter, until accepted
        self.failures = 0  # failed attempts in a row (timeouts, refusals)
        self.timeouts = 0  # requests never answered, in total
        self._ready = False
        self._pending: Optional[Tuple[Request, float]] = None  # request in flight, sent at
        self._not_before_s = 0.0  # no request before (backoff after a timeout)
        self._set_not_before_s = 0.0  # no set before (backoff after a failure)
        self._read_at_s: Optional[float] = None  # next read-back due (None: at once)

    def on_presence(self, ready: bool) -> bool:
        """The remote services are (not) reachable now; True when they (re)appeared."""
        appeared = ready and not self._ready
        if ready != self._ready:
            self._forget()
        self._ready = ready
        return appeared

    def on_restart(self) -> None:
        """The remote node restarted (seen otherwise than in the graph): read it again."""
        self._forget()

    def _forget(self) -> None:
        """A new (or no) remote process: nothing is known about it, nothing is owed to it."""
        self.running = None
        self.refused.clear()
        self._pending = None
        self.failures = 0
        self._not_before_s = self._set_not_before_s = 0.0
        self._read_at_s = None

    def differences(self, wanted: Mapping[str, Any]) -> Dict[str, Any]:
        """The wanted values the remote node is not known to run."""
        running = self.running or {}
        return {name: value for name, value in wanted.items()
                if self.running is None or running.get(name) != value}

    def in_sync(self, wanted: Mapping[str, Any]) -> bool:
        """Whether the values read back are the wanted ones."""
        return self.running is not None and not self.differences(wanted)

    def next_request(self, now_s: float, wanted: Mapping[str, Any]) -> Optional[Request]:
        """The request to send now (None: wait); the caller must send it and report back."""
        if not self._ready:
            return None
        if self._pending is not None:
            if now_s - self._pending[1] < self.config.timeout_s:
                return None  # one request at a time
            self._pending = None
            self.timeouts += 1
            self._failed(now_s)
            self._not_before_s = self._set_not_before_s
        if now_s < self._not_before_s:
            return None
        if self._read_at_s is None or now_s >= self._read_at_s:
            request = Request('get', names=self.names)
        else:
            changes = self.differences(wanted)
            if not changes or now_s < self._set_not_before_s:
                return None
            request = Request('set', values=changes)
        self._pending = (request, now_s)
        return request

    def _failed(self, now_s: float) -> None:
        self.failures += 1
        self._set_not_before_s = now_s + self.config.backoff_s(self.failures)

    def _answered(self, request: Request) -> bool:
        """Whether `request` is the one in flight (a late answer to an older one is ignored)."""
        if self._pending is None or self._pending[0] is not request:
            return False
        self._pending = None
        return True

    def on_set_done(self, now_s: float, request: Request,
                    results: Sequence[Tuple[bool, str]]) -> List[Refusal]:
        """Results (successful, reason) of a set, in the request's order; new refusals."""
        if not self._answered(request):
            return []
        self._not_before_s = now_s
        self._read_at_s = None  # read back what the remote node really took
        new = []
        for (name, value), (successful, reason) in zip(request.values.items(), results):
            if successful:
                self.refused.pop(name, None)
                continue
            refusal = Refusal(name, value, reason or 'no reason given')
            if self.refused.get(name) != refusal:
                new.append(refusal)
            self.refused[name] = refusal
        if len(results) < len(request.values) or not all(ok for ok, _ in results):
            self._failed(now_s)
        else:
            self.failures = 0
            self._set_not_before_s = now_s
        return new

    def on_get_done(self, now_s: float, request: Request, values: Mapping[str, Any]) -> None:
        """Values read back ({name: value}; None for a parameter the node does not have)."""
        if not self._answered(request):
            return
        self._not_before_s = now_s
        self.running = {name: values.get(name) for name in self.names}
        self._read_at_s = now_s + self.config.verify_period_s

    def status(self, wanted: Mapping[str, Any]) -> str:
        """Why the remote node does not run `wanted` ('' when it does)."""
        if not self._ready:
            return 'edge parameter services not reachable'
        if self.running is None:
            return 'waiting for the edge to answer'
        if self.in_sync(wanted):
            return ''
        refused = [str(r) for name, r in sorted(self.refused.items())
                   if wanted.get(name) == r.value]
        if refused:
            return 'edge refused ' + '; '.join(refused)
        return 'applying ' + ', '.join(sorted(self.differences(wanted)))
