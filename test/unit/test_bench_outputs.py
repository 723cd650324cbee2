"""`cloudseg bench-outputs` runs and prints every figure (the numbers are not judged)."""
import re

from cloudseg_ros.tools import bench_outputs


def test_bench_outputs_prints_each_cost(capsys):
    assert bench_outputs.main(['--size', '64x32', '--iters', '2']) == 0
    out = capsys.readouterr().out
    assert re.search(r'mask_color [\d.]+, mask/compressed \(PNG\) [\d.]+, mask \(mono8', out)
    assert re.search(r'bytes [\d.]+ ms, array.array \(uint8_field\) [\d.]+ ms', out), out
