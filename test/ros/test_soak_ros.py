"""`cloudseg soak` for ~10 s with the tiny CPU models: progress lines, a JSON drift report."""
import json
import os
import subprocess
import sys

import pytest

from cloudseg_ros.tools.demo import DEFAULT_CLIP

pytestmark = pytest.mark.skipif(not os.path.exists(DEFAULT_CLIP), reason='no demo clip')


def test_soak_reports_rss_and_latency_per_process(tiny_models, tmp_path):
    report_path = tmp_path / 'soak.json'
    # The isolated domain of test/ros/conftest.py is in os.environ, inherited here.
    done = subprocess.run(
        [sys.executable, '-m', 'cloudseg_ros.cli', 'soak', '--duration', '10', '--sample-s',
         '2', '--models', tiny_models, '--device', 'cpu', '--out', str(tmp_path),
         '--json', str(report_path)], capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    progress = [line for line in done.stdout.splitlines() if line.startswith('t=')]
    assert len(progress) >= 4 and 'cloud_node' in progress[-1]
    report = json.loads(report_path.read_text())
    assert set(report['rss']) == {'cloud_node', 'edge_node', 'camera_replay_node'}
    assert all(r['end_mib'] > 0 for r in report['rss'].values())
    assert report['masks'] > 0 and report['latency_per_minute'][0]['p50_ms'] > 0
    assert report['verdict']
