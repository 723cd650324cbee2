"""`cloudseg demo`: the whole CloudSeg loop as separate processes over DDS.

replay camera -> edge (select, downsample, encode) -> cloud (decode, SR, segment) -> masks,
plus the controller when its profile exists. Prints one line per second (frames sent and
analysed, uplink kbit/s, end-to-end latency), then writes an overlay video, a summary PNG and
JSON under --out.
"""
import argparse
import json
import os
import sys
import time
from typing import List, Optional

import rclpy
from rclpy.executors import Executor, SingleThreadedExecutor

from cloudseg_ros.core.sources import SourceError, open_source
from cloudseg_ros.ros.lifecycle import remote_state
from cloudseg_ros.ros.param_client import RemoteParams
from cloudseg_ros.tools.demo_report import write_report
from cloudseg_ros.tools.bag_writer import BagWriter
from cloudseg_ros.tools.processes import NodeProcess, robot_dds_env
from cloudseg_ros.tools.record import Recorder, add_record_args, summary_text, topics_from_args
from cloudseg_ros.tools.stream_monitor import StreamMonitor

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_CLIP = os.path.join(REPO, 'data', 'demo', 'camvid_val_15fps.mp4')
NODES = 'cloudseg_ros.nodes.'


def add_loop_args(parser: argparse.ArgumentParser, duration_s: float, device: str,
                  out: str) -> None:
    """The camera -> edge -> cloud options that `demo` and `soak` share."""
    parser.add_argument('--input', default=DEFAULT_CLIP,
                        help='video file, image folder, or rosbag2 MCAP file or folder '
                             '(default: the bundled CamVid clip)')
    parser.add_argument('--topic', default='',
                        help="image topic of a bag --input ('' = its only image topic)")
    parser.add_argument('--models', default='', help="weights folder ('' = models/)")
    parser.add_argument('--duration', type=float, default=duration_s, help='seconds to run')
    parser.add_argument('--rate-hz', type=float, default=15.0,
                        help='camera rate (a bag plays at its recorded pace)')
    parser.add_argument('--scale', type=int, default=4, choices=(1, 2, 3, 4))
    parser.add_argument('--codec', default='jpeg', choices=('jpeg', 'h264'))
    parser.add_argument('--device', default=device, help='cloud torch device')
    parser.add_argument('--sr-variant', default='aware', choices=('aware', 'base', 'bilinear'))
    parser.add_argument('--namespace', default='/robot1')
    parser.add_argument('--startup-timeout', type=float, default=180.0,
                        help='seconds to wait for the cloud to load its networks')
    parser.add_argument('--out', default=out, help='folder for the outputs and node logs')


def input_error(args: argparse.Namespace) -> Optional[str]:
    """Why --input (and --topic) cannot be replayed, or None: checked before any node starts."""
    try:
        open_source(args.input, loop=False, topic=args.topic).close()
    except SourceError as err:
        return str(err)
    return None


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog='cloudseg demo', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_loop_args(parser, 20.0, 'auto', os.path.join(REPO, 'out', 'demo'))
    parser.add_argument('--record', default=None, metavar='FILE.mcap',
                        help='also record the run to this rosbag2 MCAP file (cloudseg record)')
    add_record_args(parser)
    return parser.parse_args(argv)


def start_cloud(args: argparse.Namespace) -> NodeProcess:
    """Start the cloud node in its own process."""
    return NodeProcess(NODES + 'cloud_node', log_dir=os.path.join(args.out, 'logs'),
                       namespace=args.namespace, params={
                           'device': args.device, 'sr_variant': args.sr_variant,
                           'models_dir': args.models})


def start_robot(args: argparse.Namespace, source: str) -> List[NodeProcess]:
    """Edge and replay camera, each in its own process, with the robot's DDS profile."""
    common = {'namespace': args.namespace, 'log_dir': os.path.join(args.out, 'logs'),
              'env': robot_dds_env()}
    return [
        NodeProcess(NODES + 'edge_node', params={
            'scale': args.scale, 'codec': args.codec, 'probe_interval_s': 5.0}, **common),
        # A bag's frames are stamped as they are replayed: the latency figures measure this
        # run, not the time since the recording.
        NodeProcess(NODES + 'camera_replay_node', params={
            'source': source, 'rate_hz': args.rate_hz, 'loop': True, 'topic': args.topic,
            'recorded_stamps': False}, **common),
    ]


def wait_for_cloud(monitor: StreamMonitor, cloud: NodeProcess, namespace: str,
                   timeout_s: float) -> bool:
    """Block until the cloud has loaded and warmed up its networks; whether it is active.

    Its parameter services exist as soon as the node does, but they answer only once the node
    spins, which is after its autostart (configure: load and warm up; activate): so the test is
    an answered request, then its lifecycle state (a failed configure leaves it unconfigured).
    """
    name = namespace.rstrip('/') + '/cloud'
    params = RemoteParams(monitor, name)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and cloud.alive():
        try:
            if params.wait_ready(1.0):
                params.get_and_wait(['max_batch'], timeout_s=2.0)
                return remote_state(monitor, name, 5.0) == 'active'
        except TimeoutError:
            continue
    return False


def run_monitor(monitor: StreamMonitor, nodes: List[NodeProcess], duration_s: float,
                executor: Optional[Executor] = None) -> bool:
    """Spin the monitor (or `executor`, which holds it), printing each finished second.

    Returns False if a node died.
    """
    printed = 0
    deadline = time.monotonic() + duration_s
    while time.monotonic() < deadline:
        if executor is None:
            rclpy.spin_once(monitor, timeout_sec=0.05)
        else:
            executor.spin_once(timeout_sec=0.05)
        monitor.current()
        while printed < len(monitor.seconds) - 1:
            print(monitor.seconds[printed].line(), flush=True)
            printed += 1
        dead = [n for n in nodes if not n.alive()]
        if dead:
            for node in dead:
                print(f'node {node.name} exited:\n{node.log()[-3000:]}', file=sys.stderr)
            return False
    return True


def stop_recorder(recorder: Optional[Recorder]) -> None:
    """Finish the MCAP file and print what it holds."""
    if recorder is not None:
        recorder.writer.close()
        print(summary_text(recorder.writer, recorder), flush=True)
        recorder.destroy_node()


def main(argv: Optional[List[str]] = None) -> int:
    """Run the demo; exit code 1 if a node died or no mask came back."""
    args = parse_args(argv)
    source = args.input
    error = input_error(args)
    if error:
        print(f'input: {error}', file=sys.stderr)
        return 1
    os.makedirs(args.out, exist_ok=True)
    print(f'demo: {source} -> edge (x{args.scale} {args.codec}) -> cloud ({args.device}, SR '
          f'{args.sr_variant}) for {args.duration:.0f} s; logs in {args.out}/logs', flush=True)
    rclpy.init()
    monitor = StreamMonitor(args.namespace)
    recorder = Recorder(BagWriter(args.record), topics_from_args(args), args.namespace) \
        if args.record else None
    nodes = [start_cloud(args)]
    try:
        print('waiting for the cloud to load and warm up its networks...', flush=True)
        healthy = wait_for_cloud(monitor, nodes[0], args.namespace, args.startup_timeout)
        if healthy:
            nodes += start_robot(args, source)
            monitor.restart_clock()
            # One executor for the monitor and the recorder (after wait_for_cloud, whose
            # parameter calls spin the monitor on rclpy's global executor).
            executor = SingleThreadedExecutor()
            for node in (monitor, recorder):
                if node is not None:
                    executor.add_node(node)
            healthy = run_monitor(monitor, nodes, args.duration, executor)
        else:
            print(f'cloud not ready:\n{nodes[0].log()[-3000:]}', file=sys.stderr)
    finally:
        for node in reversed(nodes):
            node.stop()
        stop_recorder(recorder)
    summary = write_report(monitor, args.out, fps=args.rate_hz)
    monitor.destroy_node()
    rclpy.try_shutdown()
    print(json.dumps(summary, indent=1))
    if not healthy or summary['masks'] == 0:
        print('demo FAILED: no masks came back (see the logs above)', file=sys.stderr)
        return 1
    return 0
