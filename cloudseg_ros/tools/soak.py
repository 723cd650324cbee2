"""`cloudseg soak`: run the loop for a long time and report resource and latency drift.

replay camera -> edge -> cloud (the processes `cloudseg demo` starts) for --duration seconds.
Every --sample-s seconds it reads each process's resident memory (/proc/<pid>/status) and
prints one line with it and the end-to-end mask latency of that interval. At the end it prints
and writes (--json) RSS start/end/max per process, latency p50/p95 per minute, and a verdict
on growth.
"""
import argparse
import json
import os
import sys
import time
from typing import Dict, List, Optional

import numpy as np
import rclpy

from cloudseg_ros.tools.demo import (REPO, add_loop_args, input_error, start_cloud, start_robot,
                                     wait_for_cloud)
from cloudseg_ros.tools.processes import NodeProcess
from cloudseg_ros.tools.stream_monitor import StreamMonitor

# Growth verdict: RSS end vs start beyond both bounds, or last-minute p50 latency vs first.
RSS_GROWTH_FRACTION = 0.10
RSS_GROWTH_MIB = 20.0
LATENCY_GROWTH_FRACTION = 0.5
LATENCY_GROWTH_MS = 20.0
# Start and end RSS are medians over a window: the cloud's allocator alone moves RSS by tens of
# MiB from one sample to the next (545 <-> 630 MiB in the hour run), so 5 samples could land on
# either side of that swing. The window is RSS_WINDOW_S, at most a quarter of the run, at least
# RSS_MEDIAN_SAMPLES samples.
RSS_MEDIAN_SAMPLES = 5
RSS_WINDOW_S = 300.0


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog='cloudseg soak', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_loop_args(parser, 3600.0, 'cpu', os.path.join(REPO, 'out', 'soak'))
    parser.add_argument('--sample-s', type=float, default=5.0,
                        help='seconds between RSS / latency samples')
    parser.add_argument('--warmup-s', type=float, default=None,
                        help='seconds before the start figures (default: min(60, duration/4))')
    parser.add_argument('--json', default='', help='write the drift report here')
    return parser.parse_args(argv)


def rss_mib(pid: int) -> float:
    """Resident set size of a process in MiB (NaN once it is gone)."""
    try:
        with open(f'/proc/{pid}/status') as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float('nan')


def _percentiles(values: List[float]) -> Dict[str, float]:
    if not values:
        return {'n': 0, 'p50_ms': None, 'p95_ms': None}
    arr = np.asarray(values)
    return {'n': int(arr.size), 'p50_ms': round(float(np.percentile(arr, 50)), 1),
            'p95_ms': round(float(np.percentile(arr, 95)), 1)}


def rss_window(count: int, times_s: List[float]) -> int:
    """Samples in the start / end RSS window: RSS_WINDOW_S long, <= count // 4, >= 5."""
    interval = float(np.median(np.diff(times_s))) if len(times_s) > 1 else RSS_WINDOW_S
    by_time = int(RSS_WINDOW_S / max(interval, 1e-3))
    return max(RSS_MEDIAN_SAMPLES, min(count // 4, by_time))


def drift_report(samples: List[Dict], latencies: List[tuple], duration_s: float,
                 warmup_s: float) -> Dict:
    """Summarise RSS samples ({'t_s', 'rss_mib': {name: MiB}}) and (t_s, latency_ms) pairs.

    Start figures are taken after warmup_s (imports, first frames and allocator pools fill
    memory in the first seconds; that is not drift): the median of the first window of samples
    after it (`rss_window`), and the end the median of the last one. RSS growth is end minus start;
    it is flagged when it exceeds both RSS_GROWTH_MIB and RSS_GROWTH_FRACTION of the start.
    Latency growth compares the p50 of the last minute with the first minute that
    starts after the warm-up.
    """
    rss = {}
    names = samples[0]['rss_mib'].keys() if samples else []
    steady = [s for s in samples if s['t_s'] >= warmup_s] or samples[-1:]
    for name in names:
        series = [s['rss_mib'][name] for s in steady if not np.isnan(s['rss_mib'][name])]
        if not series:
            continue
        window = rss_window(len(series), [s['t_s'] for s in steady])
        start = float(np.median(series[:window]))
        end = float(np.median(series[-window:]))
        growth = end - start
        rss[name] = {'first_mib': round(samples[0]['rss_mib'][name], 1),
                     'start_mib': round(start, 1), 'end_mib': round(end, 1),
                     'max_mib': round(max(series), 1), 'growth_mib': round(growth, 1),
                     'grows': bool(growth > RSS_GROWTH_MIB
                                   and growth > RSS_GROWTH_FRACTION * start)}
    minutes = []
    for minute in range(int(np.ceil(duration_s / 60.0)) or 1):
        values = [ms for t_s, ms in latencies if minute * 60 <= t_s < (minute + 1) * 60]
        minutes.append(dict(minute=minute, **_percentiles(values)))
    measured = [m for m in minutes if m['n'] and m['minute'] * 60 >= warmup_s]
    latency_grows = False
    if len(measured) >= 2:
        first, last = measured[0]['p50_ms'], measured[-1]['p50_ms']
        latency_grows = bool(last > first * (1 + LATENCY_GROWTH_FRACTION)
                             and last - first > LATENCY_GROWTH_MS)
    grows = [name for name, r in rss.items() if r['grows']]
    verdict = ('growth: ' + ', '.join(grows + (['latency'] if latency_grows else []))
               if grows or latency_grows else 'no growth')
    return {'duration_s': round(duration_s, 1), 'warmup_s': round(warmup_s, 1),
            'rss': rss,
            'latency_per_minute': minutes, 'latency_overall': _percentiles(
                [ms for _, ms in latencies]),
            'masks': len(latencies), 'verdict': verdict, 'samples': samples}


def soak_loop(monitor: StreamMonitor, nodes: List[NodeProcess], duration_s: float,
              sample_s: float) -> tuple:
    """Spin the monitor for duration_s, sampling RSS; returns (samples, latencies, healthy).

    latencies are (t_s, ms) pairs of every mask, read off the monitor's per-second figures.
    """
    samples = []
    start = time.monotonic()
    next_sample, last_t = start, 0.0
    healthy = True
    while True:
        now = time.monotonic()
        rclpy.spin_once(monitor, timeout_sec=0.05)
        monitor.current()
        dead = [n for n in nodes if not n.alive()]
        for node in dead:
            print(f'node {node.name} exited:\n{node.log()[-3000:]}', file=sys.stderr)
        healthy = not dead
        if now >= next_sample or now - start >= duration_s or dead:
            t_s = now - start
            rss = {n.name: rss_mib(n.proc.pid) for n in nodes}
            samples.append({'t_s': round(t_s, 1), 'rss_mib': rss})
            lat = _percentiles([ms for second in monitor.seconds
                                if last_t <= second.t_s < t_s for ms in second.latencies_ms])
            print(f't={t_s:6.0f}s  ' + '  '.join(f'{k} {v:6.1f} MiB' for k, v in rss.items())
                  + f'  masks {lat["n"]:4d}  e2e p50 {lat["p50_ms"]} ms', flush=True)
            next_sample += sample_s
            last_t = float(np.floor(t_s))
            if t_s >= duration_s or dead:
                break
    latencies = [(second.t_s, ms) for second in monitor.seconds for ms in second.latencies_ms]
    return samples, latencies, healthy


def main(argv: Optional[List[str]] = None) -> int:
    """Run the soak; exit code 1 if a node died or no mask came back."""
    args = parse_args(argv)
    error = input_error(args)
    if error:
        print(f'input: {error}', file=sys.stderr)
        return 1
    os.makedirs(args.out, exist_ok=True)
    print(f'soak: {args.input} -> edge (x{args.scale} {args.codec}) -> cloud ({args.device}) '
          f'for {args.duration:.0f} s, sampling every {args.sample_s:.0f} s; logs in '
          f'{args.out}/logs', flush=True)
    rclpy.init()
    monitor = StreamMonitor(args.namespace, keep_frames=False)
    nodes = [start_cloud(args)]
    samples, latencies, healthy = [], [], False
    try:
        if wait_for_cloud(monitor, nodes[0], args.namespace, args.startup_timeout):
            nodes += start_robot(args, args.input)
            monitor.restart_clock()
            samples, latencies, healthy = soak_loop(monitor, nodes, args.duration,
                                                    args.sample_s)
        else:
            print(f'cloud not ready:\n{nodes[0].log()[-3000:]}', file=sys.stderr)
    finally:
        for node in reversed(nodes):
            node.stop()
        monitor.destroy_node()
        rclpy.try_shutdown()
    warmup_s = args.warmup_s if args.warmup_s is not None else min(60.0, args.duration / 4)
    report = drift_report(samples, latencies, args.duration, warmup_s)
    report['config'] = {k: getattr(args, k) for k in (
        'duration', 'sample_s', 'input', 'models', 'rate_hz', 'scale', 'codec', 'device')}
    print(json.dumps(report, indent=1))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(report, f, indent=1)
    if not healthy or not latencies:
        print('soak FAILED: a node died or no masks came back', file=sys.stderr)
        return 1
    return 0
