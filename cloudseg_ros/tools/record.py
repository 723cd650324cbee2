"""`cloudseg record`: write what a run produces to a rosbag2 MCAP file.

Records one robot namespace's uplink (`frames`, `image_lowres/compressed`), results
(`mask/compressed`), statistics (`edge_stats`, `cloud_stats`), `controller_state`,
`keyframe_request` and `/diagnostics`; `--raw-images` adds the large raw topics (`image_raw`,
`mask`, `mask_color`); `--topics` replaces the list. Like `ros2 bag record`, a topic is
subscribed once a publisher appears, with a QoS that matches every publisher (reliable and
transient local only where all of them are), and messages are written serialized, as they
arrived, so the file opens in `ros2 bag info`/`play` and Foxglove. Writing streams (memory: one
MCAP chunk); a progress line every few seconds and a summary per topic at the end.
"""
import argparse
import functools
import importlib
import os
import sys
import time
from typing import Dict, List, Optional, Sequence

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from cloudseg_ros.ros.guard import CallbackGuard
from cloudseg_ros.tools.bag_writer import BagWriter
from cloudseg_ros.tools.msg_definitions import DefinitionError

DEFAULT_TOPICS = ('frames', 'image_lowres/compressed', 'mask/compressed', 'edge_stats',
                  'cloud_stats', 'controller_state', 'keyframe_request', '/diagnostics')
RAW_TOPICS = ('image_raw', 'mask', 'mask_color')
# Subscription depth: room for a burst while the writer compresses a chunk; bounded, so a
# stalled disk costs at most this many messages per topic in memory.
QUEUE_DEPTH = 10
DISCOVERY_PERIOD_S = 0.5


def resolve(namespace: str, topic: str) -> str:
    """Absolute name of a relative topic in `namespace` (absolute names stay as they are)."""
    if topic.startswith('/'):
        return topic
    return '/' + '/'.join(p for p in (namespace.strip('/'), topic) if p)


def message_class(msg_type: str):
    """The Python class of 'pkg/msg/Type'; ImportError/AttributeError when not installed."""
    pkg, _, name = msg_type.split('/')
    return getattr(importlib.import_module(f'{pkg}.msg'), name)


def matching_qos(infos) -> QoSProfile:
    """A subscription QoS every publisher in `infos` (TopicEndpointInfo) is compatible with."""
    reliable = all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)
    latched = all(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos)
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=QUEUE_DEPTH,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


class Recorder(Node):
    """Subscribes to the wanted topics as their publishers appear and writes every message."""

    def __init__(self, writer: BagWriter, topics: Sequence[str], namespace: str) -> None:
        super().__init__('cloudseg_recorder')
        self.writer = writer
        self.wanted = [resolve(namespace, t) for t in topics]
        self._recording: Dict[str, object] = {}
        self._refused: Dict[str, str] = {}  # topic -> why it cannot be recorded
        self._guard = CallbackGuard(self.get_logger())
        self.create_timer(DISCOVERY_PERIOD_S, self._guard.wrap('discover', self._discover))
        self.get_logger().info(f"recording {', '.join(self.wanted)} to '{writer.path}'")

    def _discover(self) -> None:
        for topic in self.wanted:
            if topic in self._recording or topic in self._refused:
                continue
            infos = self.get_publishers_info_by_topic(topic)
            if infos:
                self._subscribe(topic, infos)

    def _subscribe(self, topic: str, infos) -> None:
        msg_type = infos[0].topic_type
        try:
            cls = message_class(msg_type)
            self.writer.add_topic(topic, msg_type)
        except (ImportError, AttributeError, ValueError, DefinitionError) as err:
            self._refused[topic] = f'{msg_type}: {err}'
            self.get_logger().error(f"not recording '{topic}': {self._refused[topic]}")
            return
        callback = self._guard.wrap(topic, functools.partial(self._on_message, topic))
        self._recording[topic] = self.create_subscription(
            cls, topic, callback, matching_qos(infos), raw=True)

    def _on_message(self, topic: str, data: bytes) -> None:
        self.writer.write(topic, data, self.get_clock().now().nanoseconds)

    def not_seen(self) -> List[str]:
        """Wanted topics that never had a publisher (or could not be recorded)."""
        return [t for t in self.wanted if t not in self._recording]


def progress_line(writer: BagWriter, elapsed_s: float) -> str:
    """One line: time, messages, megabytes, messages per topic."""
    per_topic = ', '.join(f'{t} {tally.messages}' for t, tally in writer.topics.items())
    return (f'record t={elapsed_s:5.0f}s  {writer.messages} msgs  '
            f'{writer.bytes / 1e6:.1f} MB  ({per_topic or "waiting for publishers"})')


def summary_text(writer: BagWriter, recorder: Recorder) -> str:
    """The per-topic table printed when a recording ends."""
    lines = [f"recorded '{writer.path}': {writer.messages} messages, "
             f'{os.path.getsize(writer.path) / 1e6:.2f} MB on disk']
    for topic, tally in writer.topics.items():
        lines.append(f'  {topic:<40} {tally.msg_type:<36} {tally.messages:7d} msgs '
                     f'{tally.bytes / 1e6:8.2f} MB')
    missing = recorder.not_seen()
    if missing:
        lines.append(f"  never published (not in the file): {', '.join(missing)}")
    return '\n'.join(lines)


def topics_from_args(args: argparse.Namespace) -> List[str]:
    """The topic list of --topics, or the defaults plus --raw-images' large topics."""
    if args.topics:
        return list(args.topics)
    return list(DEFAULT_TOPICS) + (list(RAW_TOPICS) if args.raw_images else [])


def add_record_args(parser: argparse.ArgumentParser) -> None:
    """--topics and --raw-images (shared with `cloudseg demo --record`)."""
    parser.add_argument('--topics', nargs='+', default=None, metavar='TOPIC',
                        help='topics to record, relative to --namespace or absolute '
                             f"(default: {' '.join(DEFAULT_TOPICS)})")
    parser.add_argument('--raw-images', action='store_true',
                        help=f"also record the large raw images: {', '.join(RAW_TOPICS)}")


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog='cloudseg record', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', required=True, help='MCAP file to write (FILE.mcap)')
    parser.add_argument('--namespace', default='/robot1', help='robot namespace')
    add_record_args(parser)
    parser.add_argument('--duration', type=float, default=0.0,
                        help='seconds to record (0: until Ctrl-C)')
    parser.add_argument('--progress-s', type=float, default=5.0,
                        help='seconds between progress lines')
    parser.add_argument('--report', default=None, metavar='DIR',
                        help="write the summary plots here at the end (default: "
                             "<out without .mcap>_report; '' = none)")
    return parser.parse_args(argv)


def record(args: argparse.Namespace) -> BagWriter:
    """Record until --duration or Ctrl-C; print progress and the summary; return the writer."""
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    writer = BagWriter(args.out)
    rclpy.init()
    recorder = Recorder(writer, topics_from_args(args), args.namespace)
    start = last = time.monotonic()
    try:
        while rclpy.ok() and (args.duration <= 0 or time.monotonic() - start < args.duration):
            rclpy.spin_once(recorder, timeout_sec=0.1)
            if time.monotonic() - last >= args.progress_s:
                last = time.monotonic()
                print(progress_line(writer, last - start), flush=True)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        writer.close()
        print(summary_text(writer, recorder), flush=True)
        recorder.destroy_node()
        rclpy.try_shutdown()
    return writer


def write_report(args: argparse.Namespace) -> None:
    """The summary plots of the new bag (cloudseg report), unless --report ''."""
    from cloudseg_ros.core.sources import SourceError
    from cloudseg_ros.tools.report import write_bag_report
    out_dir = args.report if args.report is not None else os.path.splitext(args.out)[0] + \
        '_report'
    if not out_dir:
        return
    try:
        summary = write_bag_report(args.out, out_dir, args.namespace)
    except SourceError as err:
        print(f'no report: {err}', file=sys.stderr)
        return
    print(f"report: {', '.join(summary['outputs'])}", flush=True)


def main(argv: Optional[List[str]] = None) -> int:
    """Record; exit code 1 when nothing at all was recorded."""
    args = parse_args(argv)
    writer = record(args)
    if writer.messages == 0:
        print('nothing was recorded: is the robot namespace right?', file=sys.stderr)
        return 1
    write_report(args)
    return 0
