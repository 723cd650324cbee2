"""The cloud's frames waiting for the engine: one per robot, batched across robots, fairly.

Each robot keeps only its newest frame waiting: when the engine is slower than the fleet, old
frames are superseded (and counted per robot) instead of queueing up latency. The inference
worker blocks in `next_batch()` (a condition variable: no polling, no CPU while idle) until a
frame is waiting, then waits up to `max_wait_s` after that frame's arrival for other robots'
frames, so that robots whose frames arrive a few milliseconds apart share one batch; it stops
waiting as soon as `max_items` robots have a frame waiting. Robots are taken longest-unserved
first, so when a batch cannot hold every waiting robot (`max_items`, or the cost budget such
as the cloud's `max_batch_pixels`) the ones left out go first next time: no robot starves.
"""
import math
import threading
import time
from typing import Callable, Dict, Generic, List, Optional, Tuple, TypeVar

T = TypeVar('T')


class FleetQueue(Generic[T]):
    """Thread-safe {robot: newest item}, taken in fair batches with a deadline."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._items: Dict[str, Tuple[float, T]] = {}  # robot -> (put at, item)
        self._last_served: Dict[str, int] = {}  # robot -> batch number it was last served in
        self._batches = 0
        self._woken = False
        self._closed = False
        self.superseded: Dict[str, int] = {}

    def put(self, robot: str, item: T) -> bool:
        """Store a robot's newest item and wake the worker; True if it superseded one."""
        with self._cond:
            replaced = robot in self._items
            # A superseding frame keeps its robot's place in the batch deadline: the robot has
            # been waiting since its first untaken frame.
            since = self._items[robot][0] if replaced else self._clock()
            self._items[robot] = (since, item)
            if replaced:
                self.superseded[robot] = self.superseded.get(robot, 0) + 1
            self._cond.notify()
            return replaced

    def remove(self, robot: str) -> bool:
        """Forget a robot that left (its waiting item is dropped); True if one was waiting."""
        with self._cond:
            self._last_served.pop(robot, None)
            self.superseded.pop(robot, None)
            return self._items.pop(robot, None) is not None

    def wake(self) -> None:
        """Make a blocked `next_batch()` return now (with what is waiting, possibly nothing)."""
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def close(self) -> None:
        """Release every waiter for good: `next_batch()` returns [] from now on."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def next_batch(self, max_items: int, max_wait_s: float = 0.0,
                   cost: Optional[Callable[[T], float]] = None, budget: float = math.inf,
                   timeout_s: Optional[float] = None) -> List[Tuple[str, T]]:
        """Block until an item waits (or `timeout_s`, `wake()`, `close()`), then form a batch.

        The batch closes when `max_items` robots have an item waiting or `max_wait_s` after
        the oldest waiting item arrived, whichever comes first. With `cost`, it stops before
        the summed cost would exceed `budget`; the first item always goes, alone if need be.
        """
        max_items = max(1, int(max_items))
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._woken or self._closed,
                                       timeout_s):
                return []
            self._woken = False
            if self._closed:
                return []
            if self._items and max_wait_s > 0:
                deadline = min(since for since, _ in self._items.values()) + max_wait_s
                while len(self._items) < max_items and not self._closed:
                    remaining = deadline - self._clock()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
            return self._take(max_items, cost, budget)

    def _take(self, max_items: int, cost, budget: float) -> List[Tuple[str, T]]:
        """Longest-unserved robots first (then oldest item), within max_items and budget."""
        order = sorted(self._items, key=lambda r: (self._last_served.get(r, -1),
                                                   self._items[r][0]))
        self._batches += 1
        taken, spent = [], 0.0
        for robot in order[:max_items]:
            item = self._items[robot][1]
            item_cost = cost(item) if cost is not None else 0.0
            if taken and spent + item_cost > budget:
                break
            spent += item_cost
            del self._items[robot]
            self._last_served[robot] = self._batches
            taken.append((robot, item))
        return taken

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
