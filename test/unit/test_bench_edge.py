"""`cloudseg bench-edge` on synthetic frames: every row measured, the preset recorded."""
import json

from cloudseg_ros.tools import bench_edge


def test_bench_edge_runs_with_a_chosen_x264_preset(tmp_path, capsys):
    out = tmp_path / 'edge.json'
    assert bench_edge.main(['--data', str(tmp_path / 'none'), '--frames', '2',
                            '--h264-preset', 'veryfast', '--json', str(out)]) == 0
    report = json.loads(out.read_text())
    assert report['h264_preset'] == 'veryfast'
    assert len(report['rows']) == 2 * 2 * 4  # resolutions x codecs x scales
    assert all(row['ms_mean'] > 0 and row['bytes_mean'] > 0 for row in report['rows'])
    assert 'x264 preset veryfast' in capsys.readouterr().out
