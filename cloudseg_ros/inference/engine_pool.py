"""Several engines in one cloud node, each with its own queue and thread.

One engine per entry of the `device` list: one per GPU, or several on one GPU (each engine has
its own CUDA stream, so they overlap). Robots are spread over the engines evenly by
`core/fleet_assign.py` (rendezvous hashing, no slack inside a node), recomputed when robots
join or leave, so that a robot keeps its engine unless it must move. Each engine has its own
`FleetQueue` (batches only ever hold one engine's robots), its own latest-probe slots and one
inference thread that sleeps on the queue's condition variable. What a batch becomes
(publishing) is the node's business: `serve(worker, batch, probes)` is called on the worker's
thread.
"""
import threading
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from cloudseg_ros.core.fleet_assign import assign
from cloudseg_ros.core.frame_slots import LatestSlots
from cloudseg_ros.inference.fleet_queue import FleetQueue

IDLE_WAKE_S = 1.0  # the longest sleep of an idle worker (to notice shutdown)


class EngineWorker:
    """One engine, the frames waiting for it, and the thread that serves them."""

    def __init__(self, index: int, engine, name: str) -> None:
        self.index = index
        self.engine = engine
        self.name = name
        self.frames: FleetQueue = FleetQueue()
        self.probes: LatestSlots = LatestSlots()
        self.thread: Optional[threading.Thread] = None


class EnginePool:
    """Engines, the robot -> engine assignment, and one serving thread per engine."""

    def __init__(self, engines: Sequence, names: Sequence[str],
                 next_batch_args: Callable[[int], Tuple[float, Callable, float]],
                 serve: Callable[[EngineWorker, List, List], None],
                 guard: Callable[[str, Callable], Callable]) -> None:
        """`next_batch_args(robots)` -> (max_items, max_wait_s, cost, budget) for a batch.

        `serve(worker, batch, probes)` runs on the worker's thread; `guard(name, fn)` wraps
        it so that an exception is logged and counted instead of ending the thread.
        """
        self.workers = [EngineWorker(i, e, n) for i, (e, n) in enumerate(zip(engines, names))]
        self._next_batch_args = next_batch_args
        self._serve = serve
        self._guard = guard
        self._assignment: Dict[str, EngineWorker] = {}
        self._superseded: Dict[str, int] = {}  # per robot, kept when it moves between engines
        self._stopping = threading.Event()

    def start(self) -> None:
        """Start one serving thread per engine."""
        for worker in self.workers:
            loop = self._guard(f'inference {worker.name}', lambda w=worker: self._work_once(w))
            worker.thread = threading.Thread(target=self._run, args=(loop,), daemon=True,
                                             name=f'inference-{worker.index}')
            worker.thread.start()

    def _run(self, loop: Callable[[], None]) -> None:
        while not self._stopping.is_set():
            loop()

    def _work_once(self, worker: EngineWorker) -> None:
        robots = sum(1 for w in self._assignment.values() if w is worker)
        max_items, max_wait_s, cost, budget = self._next_batch_args(robots)
        batch = worker.frames.next_batch(max_items, max_wait_s, cost, budget,
                                         timeout_s=IDLE_WAKE_S)
        probes = worker.probes.take(max(1, robots))
        if batch or probes:
            self._serve(worker, batch, probes)

    def set_robots(self, robots: Sequence[str]) -> Dict[str, str]:
        """Assign robots to engines (few move when the list changes); {robot: engine name}."""
        by_name = {w.name: w for w in self.workers}
        # No slack: engines of one node share its robots evenly (an uneven split lets one
        # engine saturate while the other idles); moving a robot in-process is cheap.
        mapping = assign(robots, list(by_name), slack=0.0) if robots else {}
        previous, self._assignment = self._assignment, {r: by_name[n] for r, n in mapping.items()}
        for robot, worker in previous.items():
            if self._assignment.get(robot) is not worker:
                worker.frames.remove(robot)  # left, or moved: its next frame goes to the new one
            if robot not in self._assignment:
                self._superseded.pop(robot, None)
        return mapping

    def worker_of(self, robot: str) -> Optional[EngineWorker]:
        """The engine serving `robot` (None if it is not served)."""
        return self._assignment.get(robot)

    def put_frame(self, robot: str, item) -> bool:
        """Queue a robot's newest frame on its engine; False if the robot is not served."""
        worker = self._assignment.get(robot)
        if worker is None:
            return False
        if worker.frames.put(robot, item):
            self._superseded[robot] = self._superseded.get(robot, 0) + 1
        return True

    def put_probe(self, robot: str, item) -> bool:
        """Queue a robot's newest probe on its engine and wake that engine's thread."""
        worker = self._assignment.get(robot)
        if worker is None:
            return False
        worker.probes.put(robot, item)
        worker.frames.wake()
        return True

    def superseded(self, robot: str) -> int:
        """Frames of `robot` superseded before inference (on whichever engine it was)."""
        return self._superseded.get(robot, 0)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop every serving thread (each finishes the batch it runs)."""
        self._stopping.set()
        for worker in self.workers:
            worker.frames.close()
        for worker in self.workers:
            if worker.thread is not None:
                worker.thread.join(timeout_s)
