"""SerialLanes: in order per key, parallel across keys, bounded backlog."""
import threading
import time

import pytest

from cloudseg_ros.core.serial_lanes import SerialLanes


def test_jobs_of_one_key_run_in_order_and_one_at_a_time():
    lanes = SerialLanes(threads=4, max_pending=100)
    seen, running, overlap = [], [0], []

    def job(i):
        def run():
            running[0] += 1
            overlap.append(running[0])
            time.sleep(0.001)
            seen.append(i)
            running[0] -= 1
        return run

    for i in range(50):
        assert lanes.submit('robot', job(i))
    deadline = time.monotonic() + 10.0
    while lanes.pending('robot') and time.monotonic() < deadline:
        time.sleep(0.01)
    lanes.shutdown()  # waits for the running job (it drops queued ones: none left)
    assert seen == list(range(50))
    assert max(overlap) == 1


def test_keys_run_in_parallel():
    lanes = SerialLanes(threads=2, max_pending=4)
    both = threading.Barrier(2, timeout=5.0)
    done = []
    for key in ('a', 'b'):
        lanes.submit(key, lambda key=key: (both.wait(), done.append(key)))
    lanes.shutdown()
    assert sorted(done) == ['a', 'b']  # each waited for the other: they ran at once


def test_full_lane_refuses_and_other_lanes_are_unaffected():
    lanes = SerialLanes(threads=1, max_pending=2)
    gate = threading.Event()
    assert lanes.submit('slow', gate.wait)  # running
    time.sleep(0.05)
    assert lanes.submit('slow', lambda: None) and lanes.submit('slow', lambda: None)
    assert not lanes.submit('slow', lambda: None)
    assert lanes.pending('slow') == 2
    assert lanes.submit('other', lambda: None)
    gate.set()
    lanes.shutdown()


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        SerialLanes(threads=0, max_pending=1)
