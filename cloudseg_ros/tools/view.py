"""`cloudseg view`: watch robots live in Foxglove, through a Foxglove WebSocket (foxglove-sdk).

Channels per robot namespace NS:
- `NS/camera` (foxglove.CompressedImage): the low-res uplink JPEG (`image_lowres/compressed`),
  passed through as the robot sent it;
- `NS/mask_overlay` (foxglove.CompressedImage, JPEG): class colours over the uplink image, at the
  mask's (original) resolution, stamped with the frame's acquisition stamp;
- `NS/stats` (JSON, one message a second): uplink kbit/s, frames sent and analysed per second,
  median end-to-end latency, probe agreement, and the controller's last decision;
- `/legend` (foxglove.CompressedImage, PNG): class colours and names.
Images use foxglove-sdk's well-known schemas; the time series are JSON, which Foxglove's Plot
panel reads. config/foxglove_layout.json shows everything on one screen.

Nothing is spent while nobody watches: a ROS subscription exists only while a Foxglove client
subscribes to a channel that needs it, so without clients there is no DDS traffic to this
process and no decoding. The server binds 127.0.0.1 unless `--host` says otherwise (with a
warning: the stream is unauthenticated).
"""
import argparse
import collections
import json
import sys
import threading
import time
from typing import Dict, List, Optional, Set

import cv2
import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage

from cloudseg_ros.core.bag_source import compressed_image_to_rgb
from cloudseg_ros.core.mask_codec import decode_mask_png
from cloudseg_ros.core.palette import (CAMVID_NAMES, CAMVID_PALETTE, legend_image,
                                       load_classes, overlay_on)
from cloudseg_ros.core.stream_figures import Second, count_cloud, count_edge
from cloudseg_ros.msg import ControllerState, PipelineStats
from cloudseg_ros.ros import qos
from cloudseg_ros.ros.guard import CallbackGuard
from cloudseg_ros.tools.record import resolve

LOCALHOST = '127.0.0.1'
SYNC_PERIOD_S = 0.2   # how soon a new Foxglove subscription gets its ROS subscriptions
RECENT_IMAGES = 30    # uplink JPEGs kept per robot to pair a mask with its own frame
JPEG_QUALITY = 85
# The ROS topics (relative to the namespace) each Foxglove channel needs.
NEEDS = {
    'camera': ('image_lowres/compressed',),
    'mask_overlay': ('mask/compressed', 'image_lowres/compressed'),
    'stats': ('edge_stats', 'cloud_stats', 'controller_state'),
}
_NUMBER = {'type': ['number', 'null']}
# JSON schema of NS/stats, so Foxglove's Plot and State Transitions panels know the fields.
STATS_SCHEMA = {
    'type': 'object',
    'properties': {
        'uplink_kbps': _NUMBER, 'sent_fps': _NUMBER, 'analysed_fps': _NUMBER,
        'latency_ms': _NUMBER, 'probe_agreement': _NUMBER,
        'controller': {'type': 'object', 'properties': {
            'scale': _NUMBER, 'codec': {'type': 'string'}, 'config': {'type': 'string'},
            'reason': {'type': 'string'}, 'bitrate_kbps': _NUMBER, 'estimate_kbps': _NUMBER}},
    },
}
TOPIC_TYPES = {
    'image_lowres/compressed': (CompressedImage, qos.SENSOR),
    'mask/compressed': (CompressedImage, qos.SENSOR),
    'edge_stats': (PipelineStats, qos.STATS),
    'cloud_stats': (PipelineStats, qos.STATS),
    'controller_state': (ControllerState, qos.STATUS),
}


def stamp_ns(header) -> int:
    """Header stamp in nanoseconds."""
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


class Watchers:
    """Foxglove subscriptions per channel topic, fed by the server's thread (ServerListener)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Dict[str, int] = collections.Counter()

    def on_subscribe(self, client, channel) -> None:
        """A client subscribed to `channel`."""
        with self._lock:
            self._counts[channel.topic] += 1

    def on_unsubscribe(self, client, channel) -> None:
        """A client unsubscribed from `channel` (or disconnected)."""
        with self._lock:
            self._counts[channel.topic] = max(self._counts[channel.topic] - 1, 0)

    def watched(self) -> Set[str]:
        """Channel topics with at least one subscriber now."""
        with self._lock:
            return {topic for topic, n in self._counts.items() if n > 0}


class RobotView:
    """One robot's Foxglove channels and what they are built from."""

    def __init__(self, namespace: str, palette: np.ndarray) -> None:
        import foxglove
        from foxglove.channels import CompressedImageChannel
        self.namespace = namespace
        self.palette = palette
        self.camera = CompressedImageChannel(resolve(namespace, 'camera'))
        self.overlay = CompressedImageChannel(resolve(namespace, 'mask_overlay'))
        self.stats = foxglove.Channel(resolve(namespace, 'stats'), schema=STATS_SCHEMA)
        self.images = collections.OrderedDict()  # stamp ns -> JPEG bytes, the newest last
        self.second = Second(t_s=0.0)
        self.decision: Optional[ControllerState] = None

    def on_image(self, msg: CompressedImage) -> None:
        """Uplink JPEG: forward it, keep it for the masks that will refer to its stamp."""
        data = bytes(msg.data)
        self.images[stamp_ns(msg.header)] = data
        while len(self.images) > RECENT_IMAGES:
            self.images.popitem(last=False)
        if self.camera.has_sinks():
            self.camera.log(foxglove_image(msg.header.stamp, msg.header.frame_id, data, 'jpeg'))

    def on_mask(self, msg: CompressedImage) -> None:
        """PNG class ids: overlay them on the uplink frame of the same stamp, send as JPEG."""
        if not self.overlay.has_sinks():
            return
        mask = decode_mask_png(msg.data)
        jpeg = self.images.get(stamp_ns(msg.header))
        image = compressed_image_to_rgb(jpeg) if jpeg is not None else None
        rgb = overlay_on(mask, image, self.palette)
        ok, buf = cv2.imencode('.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if ok:
            self.overlay.log(foxglove_image(msg.header.stamp, msg.header.frame_id,
                                            buf.tobytes(), 'jpeg'))

    def on_edge(self, msg: PipelineStats) -> None:
        """A sent frame: counted into this second."""
        count_edge(self.second, msg)

    def on_cloud(self, msg: PipelineStats) -> None:
        """A segmented frame or probe: counted into this second."""
        if msg.stage == 'cloud':
            count_cloud(self.second, msg, time.time())

    def on_decision(self, msg: ControllerState) -> None:
        """The controller's state: shown with the next second's figures."""
        self.decision = msg

    def publish_second(self) -> None:
        """Send the finished second's figures and start a new one."""
        second, self.second = self.second, Second(t_s=0.0)
        if self.stats.has_sinks():
            self.stats.log(second_figures(second, self.decision))


def second_figures(second: Second, decision: Optional[ControllerState]) -> Dict:
    """The JSON time-series record of one second (None where nothing was measured)."""
    figures = {
        'uplink_kbps': second.uplink_bytes * 8e-3, 'sent_fps': second.sent,
        'analysed_fps': second.analysed,
        'latency_ms': float(np.median(second.latencies_ms)) if second.latencies_ms else None,
        'probe_agreement': float(np.mean(second.probe_agreement))
        if second.probe_agreement else None,
    }
    if decision is not None:
        figures['controller'] = {
            'scale': int(decision.scale), 'codec': decision.codec, 'config': decision.config_name,
            'reason': decision.reason, 'bitrate_kbps': float(decision.bitrate_kbps),
            'estimate_kbps': float(decision.bandwidth_estimate_kbps)}
    return figures


def foxglove_image(stamp, frame_id: str, data: bytes, fmt: str):
    """A foxglove.CompressedImage of `data` (format 'jpeg' or 'png') at a ROS stamp."""
    from foxglove.messages import CompressedImage as FoxgloveImage, Timestamp
    return FoxgloveImage(timestamp=Timestamp(stamp.sec, stamp.nanosec), frame_id=frame_id,
                         data=data, format=fmt)


class ViewNode(Node):
    """Holds ROS subscriptions exactly for the Foxglove channels someone watches."""

    def __init__(self, namespaces: List[str], watchers: Watchers, names: List[str],
                 palette: np.ndarray) -> None:
        super().__init__('cloudseg_view')
        from foxglove.channels import CompressedImageChannel
        self._watchers = watchers
        self._robots = {ns: RobotView(ns, palette) for ns in namespaces}
        self._legend = CompressedImageChannel('/legend')
        png = cv2.imencode('.png', cv2.cvtColor(legend_image(names, palette),
                                                cv2.COLOR_RGB2BGR))[1]
        self._legend_png = png.tobytes()
        self._ros_subs: Dict[str, object] = {}
        self._guard = CallbackGuard(self.get_logger())
        self.create_timer(SYNC_PERIOD_S, self._guard.wrap('sync', self._sync))
        self.create_timer(1.0, self._guard.wrap('second', self._on_second))

    def needed_topics(self) -> Dict[str, tuple]:
        """{absolute ROS topic: (robot, relative topic)} the watched channels need now."""
        watched = self._watchers.watched()
        needed = {}
        for ns, robot in self._robots.items():
            for channel, topics in NEEDS.items():
                if resolve(ns, channel) in watched:
                    needed.update({resolve(ns, t): (robot, t) for t in topics})
        return needed

    def _sync(self) -> None:
        needed = self.needed_topics()
        for topic in [t for t in self._ros_subs if t not in needed]:
            self.destroy_subscription(self._ros_subs.pop(topic))
        for topic, (robot, relative) in needed.items():
            if topic not in self._ros_subs:
                msg_type, profile = TOPIC_TYPES[relative]
                handler = self._guard.wrap(topic, self._handler(robot, relative))
                self._ros_subs[topic] = self.create_subscription(msg_type, topic, handler,
                                                                 profile)

    @staticmethod
    def _handler(robot: RobotView, relative: str):
        return {'image_lowres/compressed': robot.on_image, 'mask/compressed': robot.on_mask,
                'edge_stats': robot.on_edge, 'cloud_stats': robot.on_cloud,
                'controller_state': robot.on_decision}[relative]

    def _on_second(self) -> None:
        for robot in self._robots.values():
            robot.publish_second()
        if self._legend.has_sinks():  # no latching on a WebSocket: repeat for late viewers
            self._legend.log(foxglove_image(self.get_clock().now().to_msg(), '',
                                            self._legend_png, 'png'))

    def subscribed_topics(self) -> List[str]:
        """ROS topics this node subscribes to now (none while nobody watches)."""
        return sorted(self._ros_subs)


def build_layout(namespace: str = '/robot1'):
    """The Foxglove layout of one robot on one screen: camera, overlay and legend over the
    time series (config/foxglove_layout.json is this for /robot1)."""
    import foxglove.layouts as fl
    ns = '/' + namespace.strip('/')

    def image(topic: str, proportion: float = 2.0):
        return fl.SplitItem(proportion=proportion, content=fl.ImagePanel(
            config=fl.ImageConfig(image_mode=fl.ImageModeConfig(image_topic=topic))))

    def plot(*fields: str):
        return fl.SplitItem(content=fl.PlotPanel(config=fl.PlotConfig(paths=[
            fl.PlotSeries(value=f'{ns}/stats.{name}', label=name) for name in fields])))

    decisions = fl.SplitItem(content=fl.StateTransitionsPanel(config=fl.StateTransitionsConfig(
        paths=[fl.StateTransitionsSeries(value=f'{ns}/stats.controller.config',
                                         label='controller config')])))
    images = fl.SplitContainer(direction='row', items=[
        image(f'{ns}/camera'), image(f'{ns}/mask_overlay'), image('/legend', 1.0)])
    plots = fl.SplitContainer(direction='row', items=[
        plot('uplink_kbps'), plot('sent_fps', 'analysed_fps'), plot('latency_ms'),
        plot('probe_agreement'), decisions])
    return fl.Layout(content=fl.SplitContainer(direction='column', items=[
        fl.SplitItem(proportion=2, content=images), fl.SplitItem(content=plots)]))


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog='cloudseg view', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--namespaces', nargs='+', default=['/robot1'], metavar='NS',
                        help='robot namespaces to show')
    parser.add_argument('--port', type=int, default=8765, help='WebSocket port (0: any free)')
    parser.add_argument('--host', default=LOCALHOST,
                        help='address to bind (default 127.0.0.1; another address exposes '
                             'the unauthenticated stream to that network)')
    parser.add_argument('--classes', default=None, metavar='classes.txt',
                        help="class names and colours ('id name R G B' lines; default CamVid)")
    parser.add_argument('--duration', type=float, default=0.0,
                        help='seconds to serve (0: until Ctrl-C)')
    parser.add_argument('--write-layout', default=None, metavar='FILE.json',
                        help='write the Foxglove layout for the first namespace and exit')
    return parser.parse_args(argv)


def start_server(host: str, port: int, watchers: Watchers):
    """The Foxglove WebSocket server; warns when it is reachable beyond this host."""
    import foxglove
    if host not in (LOCALHOST, 'localhost', '::1'):
        print(f'WARNING: serving on {host}: anyone who can reach this address can watch the '
              f'robots (the Foxglove WebSocket has no authentication)', file=sys.stderr)
    return foxglove.start_server(name='cloudseg_ros', host=host, port=port,
                                 server_listener=watchers)


def main(argv: Optional[List[str]] = None) -> int:
    """Serve until Ctrl-C or --duration."""
    args = parse_args(argv)
    if args.write_layout:
        with open(args.write_layout, 'w') as f:
            f.write(json.dumps(json.loads(build_layout(args.namespaces[0]).to_json()),
                               indent=1) + '\n')
        return 0
    names, palette = (load_classes(args.classes) if args.classes
                      else (CAMVID_NAMES, CAMVID_PALETTE))
    watchers = Watchers()
    server = start_server(args.host, args.port, watchers)
    rclpy.init()
    node = ViewNode(['/' + ns.strip('/') for ns in args.namespaces], watchers, names, palette)
    print(f'Foxglove WebSocket on ws://{args.host}:{server.port} for '
          f"{', '.join(args.namespaces)}: open it in Foxglove (Open connection), layout "
          f'config/foxglove_layout.json', flush=True)
    start = time.monotonic()
    try:
        while rclpy.ok() and (args.duration <= 0 or time.monotonic() - start < args.duration):
            rclpy.spin_once(node, timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        server.stop()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
