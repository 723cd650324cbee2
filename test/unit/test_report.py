"""`cloudseg report` counts a bag's stats like the live monitor does (synthetic bag, no ROS)."""
import json
import math

import numpy as np
import pytest

from cloudseg_ros.core.mask_codec import encode_mask_png
from cloudseg_ros.core.sources import SourceError
from cloudseg_ros.tools.report import main, write_bag_report

pytest.importorskip('mcap_ros2')
T0 = 1_700_000_000 * 10**9
NAN = float('nan')


def _header(t_ns):
    return {'stamp': {'sec': t_ns // 10**9, 'nanosec': t_ns % 10**9}, 'frame_id': 'cam'}


def _stats(stage, t_ns, frame_bytes=0, agreement=NAN):
    return {'header': _header(t_ns), 'stage': stage, 'frame_bytes': frame_bytes,
            'probe_agreement_miou': agreement, 'total_ms': 20.0}


def _run_bag(path, write_image_bag):
    """3 s: 10 frames/s of 1000 bytes sent; 5/s masked 120 ms after acquisition; one probe."""
    sent = [T0 + i * 100_000_000 for i in range(30)]
    masked = sent[::2]
    edge = [_stats('edge', t, 1000) for t in sent]
    cloud = [_stats('cloud', t) for t in masked] + [_stats('cloud', sent[5], agreement=0.75)]
    cloud_times = [t + 120_000_000 for t in masked] + [sent[5] + 130_000_000]
    mask = np.zeros((24, 32), np.uint8)
    mask[:, 16:] = 3
    png = {'header': _header(masked[3]), 'format': 'mono8; png compressed ',
           'data': encode_mask_png(mask)}
    state = {'header': _header(T0), 'target_config': 'x2-jpeg-q60', 'reason': 'bandwidth',
             'bitrate_kbps': 80.0, 'bandwidth_estimate_kbps': 120.0}
    return write_image_bag(path, {
        '/r/edge_stats': {'type': 'cloudseg_ros/msg/PipelineStats', 'messages': edge,
                          'log_times': sent},
        '/r/cloud_stats': {'type': 'cloudseg_ros/msg/PipelineStats', 'messages': cloud,
                           'log_times': cloud_times},
        '/r/mask/compressed': {'type': 'sensor_msgs/msg/CompressedImage', 'messages': [png],
                               'log_times': [masked[3] + 120_000_000]},
        '/r/controller_state': {'type': 'cloudseg_ros/msg/ControllerState',
                                'messages': [state], 'log_times': [T0 + 1_500_000_000]}})


def test_report_figures_match_what_was_recorded(tmp_path, write_image_bag):
    bag = _run_bag(str(tmp_path / 'run.mcap'), write_image_bag)
    summary = write_bag_report(bag, str(tmp_path / 'out'))
    assert summary['namespace'] == '/r' and summary['masks'] == 15
    assert summary['seconds'] == 3  # log times 0..2.92 s
    # Rates leave out the first and last (partial) seconds, as the live summary does.
    assert summary['sent_fps'] == 10 and summary['uplink_kbps'] == pytest.approx(80.0)
    assert summary['analysed_fps'] == 5
    assert summary['latency_ms_median'] == pytest.approx(120.0, abs=0.01)
    assert summary['probe_agreement_miou'] == pytest.approx(0.75)
    assert summary['controller_changes'] == [{'t_s': 1.5, 'config': 'x2-jpeg-q60',
                                             'reason': 'bandwidth'}]
    assert summary['topics']['/r/edge_stats'] == 30
    assert (tmp_path / 'out' / 'report.png').stat().st_size > 10_000
    saved = json.loads((tmp_path / 'out' / 'summary.json').read_text())
    assert saved['masks'] == 15 and not math.isnan(saved['uplink_kbps'])


def test_report_errors_are_clear(tmp_path, write_image_bag, capsys):
    images_only = write_image_bag(str(tmp_path / 'cam.mcap'), {
        '/cam': {'frames': [np.zeros((4, 4, 3), np.uint8)]}})
    with pytest.raises(SourceError, match='no robot namespaces'):
        write_bag_report(images_only, str(tmp_path / 'out'))
    bag = _run_bag(str(tmp_path / 'run.mcap'), write_image_bag)
    with pytest.raises(SourceError, match=r"no stats of namespace '/other' .*found: /r"):
        write_bag_report(bag, str(tmp_path / 'out'), '/other')
    assert main([str(tmp_path / 'missing.mcap'), '--out', str(tmp_path / 'o')]) == 1
    assert 'does not exist' in capsys.readouterr().err
