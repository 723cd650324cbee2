"""EnginePool: robots spread over engines, each engine's frames served on its own thread."""
import threading

from cloudseg_ros.inference.engine_pool import EnginePool


def _no_guard(_name, fn):
    return fn


def test_frames_go_to_the_robots_engine_and_are_served_on_its_thread():
    served = []  # (engine name, robots of the batch, thread name)
    done = threading.Event()

    def serve(worker, batch, probes):
        served.append((worker.name, [robot for robot, _ in batch + probes],
                       threading.current_thread().name))
        if sum(len(robots) for _, robots, _ in served) >= 20:
            done.set()

    pool = EnginePool(['engine a', 'engine b'], ['0:cpu', '1:cpu'],
                      lambda robots: (max(1, robots), 0.0, None, float('inf')), serve,
                      _no_guard)
    robots = [f'/r{i}' for i in range(20)]
    mapping = pool.set_robots(robots)
    assert set(mapping) == set(robots) and set(mapping.values()) == {'0:cpu', '1:cpu'}
    pool.start()
    for robot in robots:
        assert pool.put_frame(robot, 'frame')
    assert done.wait(10.0)
    pool.stop()
    for engine, batch_robots, thread in served:
        assert all(mapping[robot] == engine for robot in batch_robots)
        assert thread == f'inference-{engine[0]}'
    assert not pool.put_frame('/stranger', 'frame')


def test_a_robot_that_leaves_loses_its_waiting_frame_and_counters():
    pool = EnginePool(['a'], ['0:cpu'], lambda robots: (1, 0.0, None, float('inf')),
                      lambda *args: None, _no_guard)
    pool.set_robots(['/r1', '/r2'])
    pool.put_frame('/r1', 1)
    pool.put_frame('/r1', 2)
    assert pool.superseded('/r1') == 1
    pool.set_robots(['/r2'])
    assert pool.superseded('/r1') == 0 and len(pool.workers[0].frames) == 0
    assert pool.worker_of('/r1') is None and pool.worker_of('/r2') is pool.workers[0]
    pool.stop()


def test_engines_of_one_node_share_the_robots_evenly():
    pool = EnginePool(['a', 'b', 'c'], ['0:cuda', '1:cuda', '2:cuda'],
                      lambda robots: (1, 0.0, None, float('inf')), lambda *args: None,
                      _no_guard)
    for count in (2, 16, 17, 30):
        loads = {}
        for engine in pool.set_robots([f'/r{i}' for i in range(count)]).values():
            loads[engine] = loads.get(engine, 0) + 1
        # The busiest engine has no more than its even share (rounded up): 16 -> 6, 6, 4.
        assert max(loads.values()) == -(-count // 3), (count, loads)
    pool.stop()
