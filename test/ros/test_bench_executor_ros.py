"""`cloudseg bench-executor` end to end, and the cloud's publishers without event handlers."""
import json
import subprocess
import sys

from std_msgs.msg import Empty

from cloudseg_ros.ros import qos
from cloudseg_ros.tools.bench_executor import VARIANTS


def test_bench_executor_reports_every_variant_from_received_frames(tmp_path):
    out = tmp_path / 'executor.json'
    done = subprocess.run(
        [sys.executable, '-m', 'cloudseg_ros.cli', 'bench-executor', '--robots', '3', '--fps',
         '10', '--duration', '1.5', '--warmup', '1', '--repeats', '1', '--json', str(out)],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert [r['variant'] for r in report['results']] == list(VARIANTS)
    for result in report['results']:
        # Best effort on one host: a loaded machine may drop a few, never most.
        assert result['sent'] > 0 and result['received'] >= 0.5 * result['sent'], result
        assert result['cpu_us_per_received'] > 0
    assert set(report['median_us_per_frame']) == set(VARIANTS)


def test_fleet_publishers_have_no_default_event_handlers(ros_node):
    plain = ros_node.create_publisher(Empty, 'bx_plain', qos.STATS)
    fleet = ros_node.create_publisher(Empty, 'bx_fleet', qos.STATS,
                                      event_callbacks=qos.fleet_publisher_events())
    assert len(plain.event_handlers) >= 1  # rclpy's defaults: what the cloud leaves out
    assert len(fleet.event_handlers) == 0
