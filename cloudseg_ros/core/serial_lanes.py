"""Run work for many keys on a few threads: in order within a key, in parallel across keys.

The cloud decodes each robot's frames here instead of in the ROS receive callback: an H.264
stream must be decoded in order, one frame at a time, but different robots' streams need not
wait for each other, and the executor thread that takes messages from DDS must never wait for
a decoder (while it does, DDS drops frames: docs/FLEET.md). Each key's lane holds at most
`max_pending` jobs, so memory is bounded by configuration, not by how fast peers send; a job
refused because its lane is full is the caller's to count.
"""
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Deque, Dict


class SerialLanes:
    """A thread pool whose jobs run one at a time and in order per key."""

    def __init__(self, threads: int, max_pending: int, name: str = 'lane') -> None:
        if threads < 1 or max_pending < 1:
            raise ValueError(f'threads and max_pending must be >= 1, got {threads}, '
                             f'{max_pending}')
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)
        self._max_pending = max_pending
        self._lock = threading.Lock()
        self._lanes: Dict[str, Deque[Callable[[], None]]] = {}
        self._running: set = set()

    def submit(self, key: str, job: Callable[[], None]) -> bool:
        """Queue `job` on `key`'s lane; False (not queued) when the lane already holds max."""
        with self._lock:
            lane = self._lanes.setdefault(key, deque())
            if len(lane) >= self._max_pending:
                return False
            lane.append(job)
            if key in self._running:
                return True  # the lane's runner will get to it
            self._running.add(key)
        self._pool.submit(self._drain, key)
        return True

    def _drain(self, key: str) -> None:
        """Run a lane's jobs until it is empty; exceptions are the jobs' own to handle."""
        while True:
            with self._lock:
                lane = self._lanes.get(key)
                if not lane:
                    self._running.discard(key)
                    self._lanes.pop(key, None)
                    return
                job = lane.popleft()
            job()

    def pending(self, key: str) -> int:
        """Jobs queued (not yet started) on a lane."""
        with self._lock:
            return len(self._lanes.get(key, ()))

    def shutdown(self, drop_pending: bool = True) -> None:
        """Wait for the running jobs; queued ones are dropped, or run with drop_pending=False."""
        if drop_pending:
            with self._lock:
                for lane in self._lanes.values():
                    lane.clear()
        self._pool.shutdown(wait=True)
