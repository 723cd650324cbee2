"""Latest-frame slots between the receiving callbacks and the inference worker.

Each stream keeps only its newest frame waiting: when inference is slower than the camera, old
frames are superseded (and counted) instead of queueing up latency. The worker takes the waiting
frames of all streams at once, which batches robots whose frames arrive together.
"""
import threading
from typing import Dict, Generic, List, Tuple, TypeVar

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

    def take(self, max_items: int) -> List[Tuple[str, T]]:
        """Remove and return up to `max_items` waiting (stream, item), oldest stream first."""
        with self._lock:
            streams = list(self._items)[:max_items]
            return [(s, self._items.pop(s)) for s in streams]

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
