"""`cloudseg bench-fleet` end to end at a tiny size: real cloud process, robot processes, DDS.

Checks that the report is made of what actually came back (every robot served, latencies
measured, counters consistent), not how fast this shared machine is.
"""
import json
import os

import pytest

from cloudseg_ros.tools import bench_fleet
from cloudseg_ros.tools.demo import DEFAULT_CLIP

pytest.importorskip('torch')
pytestmark = pytest.mark.skipif(not os.path.exists(DEFAULT_CLIP), reason='no demo clip')


def test_bench_fleet_reports_every_robot(tiny_models, tmp_path):
    out = tmp_path / 'report.json'
    code = bench_fleet.main([
        '--robots', '2', '--fps', '5', '--size', '160x120', '--scale', '4',
        '--subscribe', 'mask,png', '--duration', '3', '--warmup', '1', '--device', 'cpu',
        '--models', tiny_models, '--max-clip-frames', '5', '--startup-timeout', '120',
        '--out', str(tmp_path), '--json', str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    for key in ('masks_per_s', 'per_robot_fps', 'latency_ms', 'superseded', 'lost',
                'cloud_cpu_percent', 'config'):
        assert key in report, key
    assert len(report['per_robot_fps']) == 2
    assert all(fps > 0 for fps in report['per_robot_fps'])
    assert report['masks_per_s'] == pytest.approx(sum(report['per_robot_fps']), abs=0.05)
    lat = report['latency_ms']
    assert 0 < lat['p50'] <= lat['p95'] <= lat['p99']
    assert report['received']['png'] > 0
    # Every robot sent frames; the cloud got some of them and was busy doing so.
    assert report['frames_sent'] >= report['frames_in'] > 0
    assert report['lost'] == report['frames_sent'] - report['frames_in']
    assert report['cloud_cpu_percent'] > 0 and report['collector_cpu_percent'] > 0
    # The cloud's own count: at 5 fps nothing is dropped on the way to this process, so it
    # served about what arrived here (masks still in flight at either end of the window, and
    # a lagging collector on a loaded machine, aside).
    assert len(report['per_robot_served_fps']) == 2
    served, received = report['served_per_s'], report['masks_per_s']
    assert served > 0 and abs(served - received) <= max(1.5, 0.3 * received), (served, received)
    assert 0 < report['cloud_latency_ms']['p50'] <= lat['p50']
    assert report['config']['robots'] == 2 and report['config']['subscribe'] == ['mask', 'png']
