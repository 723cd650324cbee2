"""`cloudseg bench-fleet`: the cloud node serving N robots, measured through ROS.

Starts the real cloud node as its own process and N synthetic robots (`tools/fleet_robot.py`,
each its own process, publishing pre-encoded EncodedFrame from a clip at F fps over DDS),
subscribes to the chosen outputs of every robot and to `cloud_stats`, and after a warm-up
measures for --duration seconds: aggregate masks/s, per-robot fps, added latency (acquisition
stamp -> output received here, same host clock), frames superseded at the cloud, frames lost
(sent by the robots, never received by the cloud), the cloud process's CPU (100 = one core)
and GPU utilisation where nvidia-smi exists. `--robots 0` measures the idle cloud node.

JSON (scripts rely on these keys): {"masks_per_s", "per_robot_fps": [...],
"latency_ms": {"p50", "p95", "p99"}, "superseded", "lost", "cloud_cpu_percent", "config"}.
The rates and latencies cover the measurement window; superseded and lost count the whole run
(robots' start to stop), with `frames_sent` beside them. Beside what this process received,
the report has what the cloud says it served (one `cloud_stats` record per mask, reliable):
`served_per_s`, `per_robot_served_fps` and `cloud_latency_ms` (acquisition stamp -> mask
published), and this process's own CPU (`collector_cpu_percent`). At hundreds of 2 MB masks/s
the collector, one Python thread with best-effort depth-1 subscriptions, may drop masks; when
`served_per_s` exceeds `masks_per_s`, the difference was lost on the way to it, not unserved.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional

import numpy as np
import rclpy
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image

from cloudseg_ros.msg import PipelineStats
from cloudseg_ros.ros import qos
from cloudseg_ros.ros.conversions import stamp_to_s
from cloudseg_ros.tools.demo import DEFAULT_CLIP, REPO, wait_for_cloud
from cloudseg_ros.tools.processes import NodeProcess, robot_dds_env

NODES = 'cloudseg_ros.nodes.'
ROBOT = 'cloudseg_ros.tools.fleet_robot'
# --subscribe name -> (topic under the robot's namespace, message type)
OUTPUTS = {'mask': ('mask', Image), 'mask_color': ('mask_color', Image),
           'png': ('mask/compressed', CompressedImage)}


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog='cloudseg bench-fleet', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--robots', type=int, default=4, help='synthetic robots (0 = idle)')
    parser.add_argument('--idle-robots', type=int, default=0,
                        help='with --robots 0: robots the idle cloud lists (none sends)')
    parser.add_argument('--fps', type=float, default=15.0, help='frames/s sent by each robot')
    parser.add_argument('--size', default='480x360', help='camera size WxH')
    parser.add_argument('--scale', type=int, default=4, choices=(1, 2, 3, 4))
    parser.add_argument('--codec', default='jpeg', choices=('jpeg', 'h264'))
    parser.add_argument('--subscribe', default='mask',
                        help=f"outputs to subscribe, comma-separated: {', '.join(OUTPUTS)}; "
                             'latency is read on the first')
    parser.add_argument('--duration', type=float, default=20.0, help='measured seconds')
    parser.add_argument('--warmup', type=float, default=3.0,
                        help='seconds after every robot got its first output, not measured')
    parser.add_argument('--device', default='auto', help="cloud torch device ('cuda', 'cpu')")
    parser.add_argument('--models', default='', help="weights folder ('' = models/)")
    parser.add_argument('--clip', default=DEFAULT_CLIP, help='video or image folder to stream')
    parser.add_argument('--max-clip-frames', type=int, default=60,
                        help='frames of the clip each robot encodes at start, then loops')
    parser.add_argument('--cloud-param', action='append', default=[], metavar='NAME=VALUE',
                        help="extra cloud parameter, e.g. compile=true (repeatable)")
    parser.add_argument('--startup-timeout', type=float, default=300.0,
                        help='seconds for the cloud to load (compile) and robots to connect')
    parser.add_argument('--out', default=os.path.join(REPO, 'out', 'bench_fleet'),
                        help='folder for node logs')
    parser.add_argument('--dds-profile', default='default', choices=('default', 'robot'),
                        help="'robot': every process (cloud, robots, this bench) uses "
                             'config/fastdds_robot.xml, shared memory with 32 MiB segments, '
                             'needed for masks of 1 MB and more (2048x1024) on one host')
    parser.add_argument('--json', default='', help='also write the report here')
    args = parser.parse_args(argv)
    try:
        args.width, args.height = (int(v) for v in args.size.lower().split('x'))
    except ValueError:
        parser.error(f'--size must be WxH, got {args.size!r}')
    args.outputs = [o for o in args.subscribe.split(',') if o]
    unknown = [o for o in args.outputs if o not in OUTPUTS]
    if unknown or not args.outputs or args.robots < 0 or args.duration <= 0:
        parser.error(f'bad --subscribe {unknown or args.subscribe!r}, --robots or --duration')
    return args


def cloud_params(args: argparse.Namespace) -> Dict:
    """The cloud node's parameters: robots, device, warm-up at the camera size, extras."""
    listed = robot_namespaces(args.robots or args.idle_robots) or ['']
    params = {'robot_namespaces': listed,
              'device': args.device, 'models_dir': args.models,
              'warmup_width': args.width, 'warmup_height': args.height,
              'warmup_scales': [args.scale]}
    for item in args.cloud_param:
        name, _, value = item.partition('=')
        params[name] = value
    return params


def robot_namespaces(count: int) -> List[str]:
    """'/robot1' .. '/robotN'."""
    return [f'/robot{i + 1}' for i in range(count)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (NaN once it is gone)."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            fields = f.read().rsplit(')', 1)[1].split()
    except OSError:
        return float('nan')
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


class GpuSampler:
    """Mean GPU utilisation (%) from nvidia-smi, sampled once a second; None without it."""

    def __init__(self) -> None:
        self.samples: List[float] = []
        self._stop = threading.Event()
        self._thread = None
        if shutil.which('nvidia-smi'):
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                out = subprocess.run(['nvidia-smi', '--query-gpu=utilization.gpu',
                                      '--format=csv,noheader,nounits'], capture_output=True,
                                     text=True, timeout=5).stdout
                self.samples.append(float(np.mean([float(v) for v in out.split()])))
            except (OSError, ValueError, subprocess.SubprocessError):
                return

    def stop(self) -> Optional[float]:
        """Stop sampling; the mean utilisation of all GPUs over the samples, or None."""
        self._stop.set()
        return round(float(np.mean(self.samples)), 1) if self.samples else None


class FleetCollector(Node):
    """Receives every robot's chosen outputs and cloud_stats; keeps latencies and counters."""

    def __init__(self, namespaces: List[str], outputs: List[str]) -> None:
        super().__init__(f'bench_fleet_{os.getpid()}')
        self.primary = outputs[0]
        self.latencies_ms: Dict[str, List[float]] = {ns: [] for ns in namespaces}
        self.received: Dict[str, int] = {o: 0 for o in outputs}
        self.last_stats: Dict[str, PipelineStats] = {}
        self.served: Dict[str, List[float]] = {ns: [] for ns in namespaces}  # cloud latencies
        for ns in namespaces:
            for output in outputs:
                topic, msg_type = OUTPUTS[output]
                self.create_subscription(
                    msg_type, f'{ns}/{topic}',
                    lambda msg, ns=ns, output=output: self._on_output(ns, output, msg),
                    qos.SENSOR)
            self.create_subscription(PipelineStats, f'{ns}/cloud_stats',
                                     lambda msg, ns=ns: self._on_stats(ns, msg), qos.STATS)

    def _on_stats(self, ns: str, msg: PipelineStats) -> None:
        self.last_stats[ns] = msg
        if msg.stage == 'cloud':  # one record per mask the cloud published
            self.served[ns].append(float(msg.latency_ms))

    def _on_output(self, ns: str, output: str, msg) -> None:
        self.received[output] += 1
        if output == self.primary:
            now_s = self.get_clock().now().nanoseconds * 1e-9
            self.latencies_ms[ns].append((now_s - stamp_to_s(msg.header.stamp)) * 1e3)

    def reset(self) -> None:
        """Forget what came before the measurement window."""
        for values in list(self.latencies_ms.values()) + list(self.served.values()):
            values.clear()
        self.received = {o: 0 for o in self.received}

    def spin_for(self, seconds: float, until=None) -> bool:
        """Spin for `seconds` or until `until()` holds; returns whether it held."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            rclpy.spin_once(self, timeout_sec=0.02)
            if until is not None and until():
                return True
        return False


def start_robots(args: argparse.Namespace) -> List[NodeProcess]:
    """One synthetic robot process per namespace, each with its own log folder."""
    robots = []
    for ns in robot_namespaces(args.robots):
        log_dir = os.path.join(args.out, 'logs', ns.strip('/'))
        robots.append(NodeProcess(ROBOT, log_dir, namespace=ns, params={
            'clip': args.clip, 'width': args.width, 'height': args.height,
            'scale': args.scale, 'codec': args.codec, 'fps': float(args.fps),
            'max_clip_frames': args.max_clip_frames,
            'summary_path': os.path.join(log_dir, 'summary.json')}))
    return robots


def robot_summaries(robots: List[NodeProcess]) -> List[Dict]:
    """What each robot wrote on exit ({'sent': N}); {} for one that wrote nothing."""
    summaries = []
    for robot in robots:
        path = os.path.join(os.path.dirname(robot.log_path), 'summary.json')
        try:
            with open(path) as f:
                summaries.append(json.load(f))
        except (OSError, ValueError):
            summaries.append({})
    return summaries


def percentiles(values: List[float]) -> Dict[str, Optional[float]]:
    """p50 / p95 / p99 in ms (None without values)."""
    if not values:
        return {'p50': None, 'p95': None, 'p99': None}
    p50, p95, p99 = np.percentile(np.asarray(values), [50, 95, 99])
    return {'p50': round(float(p50), 1), 'p95': round(float(p95), 1),
            'p99': round(float(p99), 1)}


def build_report(args: argparse.Namespace, collector: FleetCollector, window_s: float,
                 cpu_s: Dict[str, float], summaries: List[Dict], gpu_util: Optional[float],
                 load: Dict) -> Dict:
    """The bench's JSON report (see the module docstring for the keys scripts rely on).

    `cpu_s`: CPU seconds in the window of the 'cloud' and of this 'collector' process.
    """
    namespaces = robot_namespaces(args.robots)
    fps = [len(collector.latencies_ms[ns]) / window_s for ns in namespaces]
    served = [len(collector.served[ns]) / window_s for ns in namespaces]
    stats = [collector.last_stats.get(ns) for ns in namespaces]
    sent = sum(s.get('sent', 0) for s in summaries)
    frames_in = sum(s.frames_in for s in stats if s is not None)
    return {
        'masks_per_s': round(sum(fps), 2),
        'per_robot_fps': [round(v, 2) for v in fps],
        'per_robot_fps_min': round(min(fps), 2) if fps else None,
        'per_robot_fps_max': round(max(fps), 2) if fps else None,
        # The fairness figure: how far the slowest robot is below the fastest.
        'per_robot_fps_spread': (round(1.0 - min(fps) / max(fps), 3) if fps and max(fps)
                                 else None),
        'latency_ms': percentiles([v for ns in namespaces for v in collector.latencies_ms[ns]]),
        'superseded': sum(s.frames_skipped for s in stats if s is not None),
        'lost': max(0, sent - frames_in),
        'rejected': sum(s.frames_rejected for s in stats if s is not None),
        'frames_sent': sent, 'frames_in': frames_in,
        'received': dict(collector.received),
        'served_per_s': round(sum(served), 2),
        'per_robot_served_fps': [round(v, 2) for v in served],
        'cloud_latency_ms': percentiles([v for ns in namespaces for v in collector.served[ns]]),
        'cloud_cpu_percent': round(100.0 * cpu_s['cloud'] / window_s, 1),
        'collector_cpu_percent': round(100.0 * cpu_s['collector'] / window_s, 1),
        'gpu_util_percent': gpu_util,
        'config': {'robots': args.robots, 'idle_robots': args.idle_robots, 'fps': args.fps,
                   'size': args.size, 'scale': args.scale, 'codec': args.codec,
                   'subscribe': args.outputs, 'duration_s': round(window_s, 2),
                   'device': args.device, 'dds_profile': args.dds_profile,
                   'models': args.models or 'models/', 'cloud_params': args.cloud_param,
                   'cpu_count': os.cpu_count(), **load},
    }


def measure(args: argparse.Namespace, collector: FleetCollector, cloud: NodeProcess,
            robots: List[NodeProcess]) -> Optional[Dict]:
    """Wait for every robot's first output, warm up, measure; None if that never happens."""
    def all_served():
        return all(collector.latencies_ms[ns] for ns in robot_namespaces(args.robots))

    if robots and not collector.spin_for(args.startup_timeout, all_served):
        return None
    collector.spin_for(args.warmup)
    collector.reset()
    print(f'bench-fleet: measuring for {args.duration:.0f} s', flush=True)  # profilers wait on it
    load = {'loadavg_1m_start': round(os.getloadavg()[0], 2)}
    gpu = GpuSampler()
    pids = {'cloud': cloud.proc.pid, 'collector': os.getpid()}
    cpu_start, start = {k: cpu_seconds(pid) for k, pid in pids.items()}, time.monotonic()
    collector.spin_for(args.duration)
    window_s = time.monotonic() - start
    cpu_s = {k: cpu_seconds(pid) - cpu_start[k] for k, pid in pids.items()}
    gpu_util = gpu.stop()
    load['loadavg_1m_end'] = round(os.getloadavg()[0], 2)
    for robot in robots:
        robot.stop()
    collector.spin_for(1.5)  # the last cloud_stats of frames still in flight
    return build_report(args, collector, window_s, cpu_s, robot_summaries(robots), gpu_util,
                        load)


def main(argv: Optional[List[str]] = None) -> int:
    """Run the fleet bench; exit code 1 if a node died or no output came back."""
    args = parse_args(argv)
    print(f'bench-fleet: {args.robots} robots x {args.fps} fps, {args.size} /{args.scale} '
          f'{args.codec}, subscribed {args.outputs}, {args.duration:.0f} s on {args.device}; '
          f'logs in {args.out}/logs', flush=True)
    if args.dds_profile == 'robot':
        os.environ.update(robot_dds_env())  # before rclpy.init; the processes inherit it
    rclpy.init()
    collector = FleetCollector(robot_namespaces(args.robots), args.outputs)
    cloud = NodeProcess(NODES + 'cloud_node', os.path.join(args.out, 'logs'),
                        params=cloud_params(args))
    robots, report = [], None
    try:
        if wait_for_cloud(collector, cloud, '', args.startup_timeout):
            robots = start_robots(args)
            report = measure(args, collector, cloud, robots)
    finally:
        for node in robots + [cloud]:
            node.stop()
        collector.destroy_node()
        rclpy.try_shutdown()
    if report is None:
        print(f'bench-fleet FAILED: no output from every robot\n{cloud.log()[-3000:]}',
              file=sys.stderr)
        return 1
    print(json.dumps(report, indent=1))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(report, f, indent=1)
    return 0
