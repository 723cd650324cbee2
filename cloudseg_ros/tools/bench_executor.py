"""`cloudseg bench-executor`: the executor's CPU cost per received frame, as the cloud is built.

On the H200 the cloud node was bound by its Python threads, and half of that was the executor
thread (docs/FLEET.md). This bench isolates that part on any machine: one node with the cloud's
entities per robot (`ros.robot_stream.RobotStream`: five publishers and the `frames`
subscription) receives small EncodedFrame messages from a publisher node in the same process,
and the process's CPU time per received message is reported for each executor variant:

- `mt`: MultiThreadedExecutor(2), the cloud's executor; `st`: SingleThreadedExecutor;
- `default-events`: rclpy's default event handlers on every publisher (before
  `qos.fleet_publisher_events`); `no-events`: the cloud's publishers now.

The publisher's own cost is in every figure alike; compare variants, not absolute values.

    cloudseg bench-executor --robots 16 --fps 15 --duration 10 --repeats 3
"""
import argparse
import json
import statistics
import threading
import time
from typing import Dict, List, Optional

import rclpy
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node

from cloudseg_ros.msg import EncodedFrame
from cloudseg_ros.core.receiver import ReceiveLimits
from cloudseg_ros.ros import qos
from cloudseg_ros.ros.guard import CallbackGuard
from cloudseg_ros.ros.robot_stream import RobotStream

VARIANTS = ('mt/no-events', 'mt/default-events', 'st/no-events')


class _Receiver(Node):
    """The cloud's per-robot entities; `on_frame` only counts (no decoding, no inference)."""

    def __init__(self, robots: int, name: str, events) -> None:
        super().__init__(name)
        self.guard = CallbackGuard(self.get_logger())
        self.received = 0
        self.streams = [RobotStream(self, f'/bx{i}', None, ReceiveLimits(), 1.0, events)
                        for i in range(robots)]

    def on_frame(self, stream, msg, info=None) -> None:
        self.received += 1


def _run_variant(variant: str, args: argparse.Namespace, run: int) -> Dict:
    kind, events = variant.split('/')
    events = qos.PublisherEventCallbacks() if events == 'default-events' else None
    receiver = _Receiver(args.robots, f'bench_executor_cloud_{run + 1}', events)
    sender = Node(f'bench_executor_robots_{run + 1}')
    pubs = [sender.create_publisher(EncodedFrame, f'/bx{i}/frames', qos.ENCODED_STREAM)
            for i in range(args.robots)]
    msg = EncodedFrame(data=bytes(args.payload))
    executor = (MultiThreadedExecutor(num_threads=2) if kind == 'mt'
                else SingleThreadedExecutor())
    executor.add_node(receiver)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    time.sleep(args.warmup)  # discovery
    sent, start_received = 0, receiver.received
    cpu0, wall0 = time.process_time(), time.monotonic()
    period = 1.0 / args.fps
    while time.monotonic() - wall0 < args.duration:
        for pub in pubs:
            pub.publish(msg)
        sent += len(pubs)
        time.sleep(max(0.0, period - (time.monotonic() - wall0) % period))
    cpu_s, wall_s = time.process_time() - cpu0, time.monotonic() - wall0
    received = receiver.received - start_received
    executor.shutdown(timeout_sec=2.0)
    spinner.join(timeout=2.0)
    receiver.destroy_node()
    sender.destroy_node()
    return {'variant': variant, 'sent': sent, 'received': received,
            'process_cpu_percent': round(100.0 * cpu_s / wall_s, 1),
            'cpu_us_per_received': round(1e6 * cpu_s / received, 1) if received else None}


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog='cloudseg bench-executor', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--robots', type=int, default=16)
    parser.add_argument('--fps', type=float, default=15.0, help='frames/s per robot')
    parser.add_argument('--duration', type=float, default=10.0, help='measured s per variant')
    parser.add_argument('--warmup', type=float, default=2.0, help='s for discovery')
    parser.add_argument('--payload', type=int, default=20000, help='bytes per frame')
    parser.add_argument('--variants', nargs='+', default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument('--repeats', type=int, default=3,
                        help='rounds over the variants (interleaved: load drifts alike)')
    parser.add_argument('--json', default='', help='also write the results here')
    args = parser.parse_args(argv)
    if args.robots < 1 or args.repeats < 1 or not args.fps > 0 or not args.duration > 0 \
            or args.warmup < 0 or args.payload < 0:
        parser.error('--robots and --repeats must be >= 1, --fps and --duration > 0, '
                     '--warmup and --payload >= 0')
    return args


def main(argv: Optional[List[str]] = None) -> int:
    """Run the variants interleaved, print each run and each variant's median (JSON too)."""
    args = parse_args(argv)
    rclpy.init()
    results = []
    try:
        # The first run in a process pays one-off costs (type support loading, first
        # discovery): a short unreported run takes them, so no variant is judged on them.
        _run_variant(args.variants[0], argparse.Namespace(**{**vars(args), 'duration': 1.0}),
                     -1)
        for round_ in range(args.repeats):
            for variant in args.variants:
                result = _run_variant(variant, args, len(results))
                results.append(result)
                print(f"round {round_ + 1} {variant:<20} received {result['received']:>6} of "
                      f"{result['sent']:>6}  process CPU {result['process_cpu_percent']:>5.1f} %  "
                      f"{result['cpu_us_per_received']} us per frame", flush=True)
    finally:
        rclpy.try_shutdown()
    medians = {v: statistics.median(r['cpu_us_per_received'] for r in results
                                    if r['variant'] == v and r['cpu_us_per_received'])
               for v in args.variants}
    for variant, us in medians.items():
        print(f'median {variant:<20} {us:.1f} us per frame')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'config': vars(args), 'results': results,
                       'median_us_per_frame': medians}, f, indent=1)
    return 0
