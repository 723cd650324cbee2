"""Turn a `cloudseg wan-test` output folder into a small replayable trace (test fixture).

`python -m cloudseg_ros.tools.wan_trace OUT_DIR FIXTURE.json.gz` keeps what the controller saw
(the monitor's --trace events: frames sent, arrival reports, the cloud's queue and inference
times, masks back, switches), the link's phases (capacity in kbit/s and their times), the
ladder the controller chose from and the run's verdict. Times are made relative to the first
phase's start (stamps keep their offset to the event times, so latency and delay gradients are
unchanged). test/unit/test_wan_traces.py replays such files through core/uplink.py.
"""
import argparse
import gzip
import json
import os
from typing import Dict, List, Optional


def _phases(rows: List[Dict]) -> List[List[float]]:
    """[[capacity_kbps, start_s, end_s], ...] from the report's per-second rows."""
    phases: List[List[float]] = []
    for row in rows:
        rate = row.get('capacity_kbps')
        if rate is None:
            continue
        if phases and phases[-1][0] == rate and phases[-1][2] == row['t']:
            phases[-1][2] = row['t'] + 1
        else:
            phases.append([rate, row['t'], row['t'] + 1])
    return phases


def _shift(event: list, t0: float) -> list:
    """Event with its time, and its stamps, relative to t0 (ns stamps by whole ns)."""
    shifted = [round(event[0] - t0, 4), *event[1:]]
    kind = event[1]
    if kind == 'rx':
        shifted[4] = round(event[4] - t0, 4)
        shifted[5] = round(event[5] - t0, 4)
    elif kind in ('cloud', 'mask'):
        shifted[2] = event[2] - int(round(t0 * 1e9))
    return shifted


def make_fixture(out_dir: str) -> Dict:
    """Return the fixture document of one wan-test output folder."""
    with open(os.path.join(out_dir, 'wan_test.json')) as stream:
        report = json.load(stream)
    phases = _phases(report['seconds'])
    t0 = float(int(phases[0][1]))
    with open(os.path.join(out_dir, 'trace.jsonl')) as stream:
        events = [json.loads(line) for line in stream if line.strip()]
    with open(os.path.join(out_dir, 'profile.yaml')) as stream:
        profile_yaml = stream.read()
    return {'result': report['result'],
            'checks': [{'name': c.get('name'), 'passed': c.get('passed')}
                       for c in report.get('checks', [])],
            'phases': [[rate, start - t0, end - t0] for rate, start, end in phases],
            'profile_yaml': profile_yaml,
            'events': [_shift(e, t0) for e in events]}


def main(argv: Optional[List[str]] = None) -> int:
    """Write the fixture of OUT_DIR to FIXTURE (gzip-compressed JSON)."""
    parser = argparse.ArgumentParser(prog='wan_trace', description=__doc__.split('\n')[0])
    parser.add_argument('out_dir')
    parser.add_argument('fixture')
    args = parser.parse_args(argv)
    document = make_fixture(args.out_dir)
    with gzip.open(args.fixture, 'wt') as stream:
        json.dump(document, stream, separators=(',', ':'))
    print(f"{args.fixture}: {len(document['events'])} events, {document['result']}, "
          f'{os.path.getsize(args.fixture)} bytes')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
