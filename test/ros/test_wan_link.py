"""The whole loop over a real, shaped link between two network namespaces (`cloudseg wan-test`).

Short phases (8 -> 1 -> 4 Mbit/s, 12 s each after a 10 s climb): 57 s of wall time with
start-up, and its verdict depends on the adaptive controller, so it is opt-in:
``CLOUDSEG_WAN_TEST=1`` (and root, for `ip netns` and `tc`). Deselect it with ``-m 'not wan'``.
The full-length run is ``make wan-test``; docs/WAN.md has its numbers. The outage test cuts the
link for 1 s and for 30 s (about 110 s of wall time), same opt-in. The zenoh variant runs the
stepped schedule with the robot-cloud hop over zenoh with mutual TLS (`--uplink zenoh`).
"""
import json
import os

import pytest

from cloudseg_ros.tools import wan_test
from cloudseg_ros.tools.wan_link import privileges_problem

pytestmark = pytest.mark.wan
MAX_STALE_MS = 5000.0  # oldest mask in the 1 Mbit/s phase over zenoh (the backlog of the drop)


def _skip_reason() -> str:
    if os.environ.get('CLOUDSEG_WAN_TEST') != '1':
        return 'opt-in: set CLOUDSEG_WAN_TEST=1 (about 60 s, needs root and ip netns)'
    problem = privileges_problem()
    return f'needs root and network namespaces ({problem})' if problem else ''


def _run_and_check(argv, out, capsys):
    code = wan_test.main(argv + ['--out', str(out)])
    printed = capsys.readouterr().out
    if 'wan-test skipped' in printed:
        pytest.skip(printed.strip().splitlines()[-1])
    result = json.loads((out / 'wan_test.json').read_text())
    failed = [f"{c['name']}: {c['detail']}" for c in result['checks'] if not c['passed']]
    assert code == 0 and not failed, '\n'.join(failed) + '\n' + printed[-4000:]
    assert (out / 'wan_test.png').is_file()
    return result


@pytest.mark.skipif(bool(_skip_reason()), reason=_skip_reason() or 'runs')
def test_stream_follows_a_stepped_uplink(tmp_path, capsys):
    _run_and_check(['--phase-s', '12', '--warmup-s', '10'], tmp_path / 'wan', capsys)


@pytest.mark.skipif(bool(_skip_reason()), reason=_skip_reason() or 'runs')
def test_stream_recovers_from_link_outages_of_1_and_30_s(tmp_path, capsys):
    result = _run_and_check(['--rates', '4000', '4000', '--phase-s', '10', '--warmup-s', '5',
                             '--outages', '1', '30', '--recovery-s', '20'],
                            tmp_path / 'wan', capsys)
    names = {check['name'] for check in result['checks']}
    for seconds in (1, 30):  # judged, not merely run
        assert f'no backlog after a {seconds} s outage' in names
        assert f'latency after a {seconds} s outage' in names


@pytest.mark.skipif(bool(_skip_reason()), reason=_skip_reason() or 'runs')
def test_stream_over_zenoh_mtls_follows_a_stepped_uplink(tmp_path, capsys):
    pytest.importorskip('zenoh')
    pytest.importorskip('cryptography')
    result = _run_and_check(['--uplink', 'zenoh', '--phase-s', '20', '--warmup-s', '10'],
                            tmp_path / 'wan', capsys)
    assert result['settings']['uplink'] == 'zenoh'
    link = [c for c in result['checks'] if c['name'] == 'zenoh mTLS link']
    assert link and link[0]['passed'], link
    # TCP queues what DDS would drop: with the robot's send buffer autotuned, masks came back up
    # to 9 s old after the drop to 1 Mbit/s; bounded (zenoh_fleet.SEND_BUFFER_BYTES), 2.4 s.
    drop = next(p for p in result['phases'] if p['rate_kbit'] == 1000)
    assert drop['latency_ms_max'] < MAX_STALE_MS, drop
