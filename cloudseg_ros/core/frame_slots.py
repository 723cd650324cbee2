"""Latest-frame slots between the receiving callbacks and the inference worker.

Each stream keeps only its newest frame waiting: when inference is slower than the camera, old
frames are superseded (and counted) instead of queueing up latency. The worker takes the waiting
frames of all streams at once, which batches robots whose frames arrive together, within a
cost budget (the cloud's `max_batch_pixels`).
"""
import math
import threading
from typing import Callable, Dict, Generic, List, Optional, Tuple, TypeVar

T = TypeVar('T')


class LatestSlots(Generic[T]):
    """Thread-safe {stream: newest item} with a count of superseded items per stream."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: Dict[str, T] = {}
        self.superseded: Dict[str, int] = {}

    def put(self, stream: str, item: T) -> bool:
        """Store the newest item of a stream; True if it replaced one not yet taken."""
        with self._lock:
            replaced = stream in self._items
            self._items[stream] = item
            if replaced:
                self.superseded[stream] = self.superseded.get(stream, 0) + 1
            return replaced

    def take(self, max_items: int, cost: Optional[Callable[[T], float]] = None,
             budget: float = math.inf) -> List[Tuple[str, T]]:
        """Remove and return up to `max_items` waiting (stream, item), oldest stream first.

        With `cost`, the batch stops before the summed cost would exceed `budget` (e.g. output
        pixels against a memory budget); the first item is always taken, so one item over the
        budget is still served, alone.
        """
        with self._lock:
            taken, spent = [], 0.0
            for stream in list(self._items)[:max_items]:
                item_cost = cost(self._items[stream]) if cost is not None else 0.0
                if taken and spent + item_cost > budget:
                    break
                spent += item_cost
                taken.append((stream, self._items.pop(stream)))
            return taken

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
