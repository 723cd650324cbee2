"""The robot-cloud hop over zenoh with mutual TLS (`uplink_transport: zenoh`), or plain DDS.

With `uplink_transport: dds` (the default) nothing changes: the edge publishes `frames` and the
cloud subscribes `<ns>/frames` over DDS. With `zenoh`:

- robot: the edge publishes its EncodedFrames to `cloudseg/<robot>/frames` in a zenoh session
  that connects out to the server over `tls/` with the robot's certificate (`cloudseg keys`),
  and republishes what comes back (`mask/compressed`, `cloud_stats`, `keyframe_request`) on the
  same relative ROS topics the cloud would have published, so the controller, the edge's own
  key-frame subscription and any viewer on the robot are unchanged. No frames leave over DDS.
- server: the cloud node's session is a zenoh router listening on `zenoh_endpoint` with mutual
  TLS and per-robot access control (core/zenoh_fleet.py). Each robot stream's DDS `frames`
  subscription is removed; frames arriving from zenoh enter the same `on_frame` path. Its
  `mask/compressed`, `cloud_stats` and `keyframe_request` publishers also send a copy down.

Messages keep their ROS types, CDR-serialised with rclpy.serialization, so nothing above the
transport changes. Memory is bounded by configuration: each incoming key keeps at most
`zenoh_queue_depth` messages (oldest dropped) of at most `zenoh_max_message_bytes` each (zenoh
refuses larger messages on the link). zenoh is imported only when selected, so DDS-only robots
need not install it.
"""
import json
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from rclpy.node import Node
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage
from std_msgs.msg import Empty

from cloudseg_ros.core.cdr_envelope import check_cdr_envelope
from cloudseg_ros.core.tls_probe import probe_tls
from cloudseg_ros.core.zenoh_fleet import (DEFAULT_PORT, SERVER_NAME, down_key, frames_key,
                                           robot_name, session_settings)
from cloudseg_ros.msg import EncodedFrame, PipelineStats
from cloudseg_ros.ros import qos
from cloudseg_ros.ros.clock import steady_clock
from cloudseg_ros.ros.params import ParamSpec

TRANSPORTS = ('dds', 'zenoh')
DRAIN_PERIOD_S = 0.005  # how often received zenoh samples are handed to the node
LINK_CHECK_S = 5.0  # how often the edge looks whether its link to the server is up
LINK_REPORT_S = 30.0  # while it is down, why is logged again this often
# Downlink: (relative topic, type, QoS), as the cloud publishes them (ros/robot_stream.py).
DOWNLINK = (('mask/compressed', CompressedImage, qos.IMAGE),
            ('cloud_stats', PipelineStats, qos.STATS),
            ('keyframe_request', Empty, qos.STATS))
# Stream publishers that also go down, by RobotStream attribute, in DOWNLINK's order.
DOWNLINK_ATTRS = ('png_pub', 'stats_pub', 'key_pub')

UPLINK_PARAMS = (
    ParamSpec('uplink_transport', 'dds',
              'Robot-cloud hop: dds (plain ROS) or zenoh (mutual TLS, per-robot access '
              'control; docs/SECURITY.md).', choices=TRANSPORTS, read_only=True),
    ParamSpec('zenoh_endpoint', '',
              "zenoh only. Robot: the server's tls/<host>:<port> to connect to; cloud: the "
              f"tls/<address>:<port> to listen on ('' = tls/localhost:{DEFAULT_PORT} on the "
              f'robot, tls/0.0.0.0:{DEFAULT_PORT} on the cloud).', read_only=True),
    ParamSpec('zenoh_keys_dir', '',
              'zenoh only. Folder with ca.pem and this side\'s <name>.pem/.key (cloudseg keys); '
              "the robot's name is its namespace ('/robot1' -> robot1.pem), the server's "
              f'{SERVER_NAME}.pem.', read_only=True),
    ParamSpec('zenoh_queue_depth', 4,
              'zenoh only. Received messages kept per key before the oldest is dropped.',
              1, 1000, read_only=True),
    ParamSpec('zenoh_max_message_bytes', 8_000_000,
              'zenoh only. Largest message accepted from the link, bytes.',
              4096, 1 << 30, read_only=True),
)


@dataclass(frozen=True)
class UplinkSettings:
    """The uplink parameters of one node, checked."""

    transport: str
    endpoint: str
    keys_dir: str
    queue_depth: int
    max_message_bytes: int

    @staticmethod
    def from_values(values: Dict[str, Any], listen: bool) -> 'UplinkSettings':
        """Build from {parameter: value}; ValueError says what is missing or wrong."""
        transport = values['uplink_transport']
        if transport not in TRANSPORTS:
            raise ValueError(f'uplink_transport={transport!r} is not one of: dds, zenoh')
        host = '0.0.0.0' if listen else 'localhost'
        endpoint = values['zenoh_endpoint'] or f'tls/{host}:{DEFAULT_PORT}'
        if transport == 'zenoh' and not values['zenoh_keys_dir']:
            raise ValueError('uplink_transport zenoh needs zenoh_keys_dir (cloudseg keys)')
        return UplinkSettings(transport, endpoint, values['zenoh_keys_dir'],
                              int(values['zenoh_queue_depth']),
                              int(values['zenoh_max_message_bytes']))


def _import_zenoh():
    try:
        import zenoh
    except ImportError as err:
        raise RuntimeError('uplink_transport zenoh needs the eclipse-zenoh package '
                           f'(pip install eclipse-zenoh): {err}') from err
    return zenoh


def open_session(settings: Dict[str, object]):
    """A zenoh session from {config path: value} (core/zenoh_fleet.session_settings)."""
    zenoh = _import_zenoh()
    zenoh.try_init_log_from_env()  # RUST_LOG=info shows links, TLS and access decisions
    config = zenoh.Config()
    for path, value in settings.items():
        config.insert_json5(path, json.dumps(value))
    return zenoh.open(config)


class ZenohPublisher:
    """`publish(msg)` like a ROS publisher, onto one zenoh key (CDR bytes); drops if congested.

    Plain `session.put` rather than a declared publisher: with eclipse-zenoh 1.10.2 a declared
    publisher on the robot sent nothing through the server's deny-by-default access control
    (likely its matching-subscriber interest being refused), while puts went through.
    """

    def __init__(self, session, key: str) -> None:
        self._session = session
        self._key = key
        self._drop = _import_zenoh().CongestionControl.DROP

    def publish(self, msg) -> None:
        """Serialise and send; never blocks on a slow link (stale frames are worth nothing)."""
        self._session.put(self._key, serialize_message(msg), congestion_control=self._drop)


class TeePublisher:
    """Publishes to a ROS publisher (server-side viewers) and to a zenoh key (the robot)."""

    def __init__(self, ros_pub, zenoh_pub: ZenohPublisher) -> None:
        self._ros_pub = ros_pub
        self._zenoh_pub = zenoh_pub

    def publish(self, msg) -> None:
        """Publish on both."""
        self._ros_pub.publish(msg)
        self._zenoh_pub.publish(msg)

    def get_subscription_count(self) -> int:
        """ROS subscribers plus one: the robot behind zenoh always wants its downlink.

        The cloud builds an output only when its publisher has subscribers (lazy publishing);
        without the +1 a robot with no server-side viewer would get no masks at all.
        """
        return self._ros_pub.get_subscription_count() + 1


def decode_payload(payload: bytes, msg_type: type, key: str = ''):
    """The `msg_type` message in CDR `payload`; ValueError (naming `key`) if it is not one."""
    try:
        check_cdr_envelope(payload)  # what would make rclpy read past the buffer
    except ValueError as err:
        raise ValueError(f'undecodable {msg_type.__name__} on {key}: {err}') from err
    try:
        return deserialize_message(payload, msg_type)
    except Exception as err:  # noqa: B902 (rclpy raises its own types for bad CDR)
        raise ValueError(f'undecodable {msg_type.__name__} on {key}: '
                         f'{type(err).__name__}') from err


class Inbox:
    """Received samples of one zenoh key, at most `depth` kept (oldest dropped)."""

    def __init__(self, session, key: str, msg_type: type, depth: int) -> None:
        zenoh = _import_zenoh()
        self.key = key
        self.msg_type = msg_type
        self._sub = session.declare_subscriber(key, zenoh.handlers.RingChannel(depth))

    def drain(self, limit: int) -> List[bytes]:
        """Up to `limit` waiting payloads (CDR bytes), oldest first."""
        payloads = []
        while len(payloads) < limit:
            sample = self._sub.try_recv()
            if sample is None:
                break
            payloads.append(sample.payload.to_bytes())
        return payloads

    def decode(self, payload: bytes):
        """The ROS message in `payload`; ValueError if it is not a valid CDR `msg_type`."""
        return decode_payload(payload, self.msg_type, self.key)


class ZenohLink:
    """One node's zenoh session and the timer that hands received messages to the node.

    Each route is (inbox, deliver): every payload is decoded and delivered inside the node's
    CallbackGuard, so a malformed or failing message is dropped, counted and logged alone.
    """

    def __init__(self, node: Node, session, depth: int, callback_group=None) -> None:
        self.session = session
        self._depth = depth
        self._routes: List[Tuple[Inbox, Callable]] = []
        node.create_timer(DRAIN_PERIOD_S, self._drain, callback_group=callback_group,
                          clock=steady_clock())

    def route(self, guard, inbox: Inbox, deliver: Callable, on_error=None) -> None:
        """Deliver `inbox`'s messages to `deliver(msg)`, guarded."""
        self._routes.append((inbox, guard.wrap(f'zenoh {inbox.key}',
                                               lambda raw: deliver(inbox.decode(raw)),
                                               on_error=on_error)))

    def _drain(self) -> None:
        for inbox, deliver in self._routes:
            for payload in inbox.drain(self._depth):
                deliver(payload)

    def close(self) -> None:
        """Close the session (links, subscribers, publishers)."""
        self.session.close()


class LinkWatch:
    """Says when the robot's link to the server comes up, and why not while it is down.

    zenoh retries a refused TLS link silently, so without this a robot with the wrong keys or
    endpoint would just never send anything. While the session has no router, a TLS probe
    (core/tls_probe.py, in its own thread: it may wait for a timeout) runs every LINK_CHECK_S;
    its reason is logged as an error when it changes, and again every LINK_REPORT_S.
    """

    def __init__(self, node: Node, session, settings: UplinkSettings, robot: str) -> None:
        self._logger = node.get_logger()
        self._session = session
        self._settings = settings
        self._robot = robot
        self._connected = False
        self._reason = ''
        self._next_report_s = 0.0
        self._probe: Optional[threading.Thread] = None
        node.create_timer(LINK_CHECK_S, self._check, clock=steady_clock())

    def _check(self) -> None:
        connected = bool(list(self._session.info.routers_zid()))
        if connected != self._connected:
            self._logger.info(f'uplink: zenoh link to {self._settings.endpoint} '
                              f"{'up' if connected else 'lost'}")
            self._reason = ''
        self._connected = connected
        if not connected and not (self._probe and self._probe.is_alive()):
            self._probe = threading.Thread(target=self._report, daemon=True)
            self._probe.start()

    def _report(self) -> None:
        reason = (probe_tls(self._settings.endpoint, self._settings.keys_dir, self._robot)
                  or 'the TLS handshake succeeds, but zenoh did not open a session')
        now_s = time.monotonic()
        if reason == self._reason and now_s < self._next_report_s:
            return
        self._reason, self._next_report_s = reason, now_s + LINK_REPORT_S
        self._logger.error(f'uplink: no zenoh link to {self._settings.endpoint}: {reason}')


class EdgeZenohUplink:
    """The edge's zenoh side: `publish(frame)` up, the downlink republished on local topics."""

    def __init__(self, node: Node, guard, settings: UplinkSettings) -> None:
        self.robot = robot_name(node.get_namespace())
        session = open_session(session_settings(settings.endpoint, settings.keys_dir,
                                                self.robot, False, settings.max_message_bytes))
        self.link = ZenohLink(node, session, settings.queue_depth)
        for topic, msg_type, profile in DOWNLINK:
            local = node.create_publisher(msg_type, topic, profile)
            self.link.route(guard, Inbox(session, down_key(self.robot, topic), msg_type,
                                         settings.queue_depth), local.publish)
        self._frames = ZenohPublisher(session, frames_key(self.robot))
        self.watch = LinkWatch(node, session, settings, self.robot)

    def publish(self, frame: EncodedFrame) -> None:
        """Send one frame up."""
        self._frames.publish(frame)


def edge_frames_publisher(node: Node, guard, values: Dict[str, Any]):
    """The edge's `frames` publisher: a DDS one, or an EdgeZenohUplink (same `publish`).

    `guard` is the node's CallbackGuard, used for what arrives from the link.
    """
    settings = UplinkSettings.from_values(values, listen=False)
    if settings.transport == 'dds':
        return node.create_publisher(EncodedFrame, 'frames', qos.ENCODED_STREAM)
    uplink = EdgeZenohUplink(node, guard, settings)
    node.get_logger().info(f'uplink: zenoh as {uplink.robot} to {settings.endpoint} '
                           '(mutual TLS)')
    return uplink


def attach_cloud_uplink(node: Node, values: Dict[str, Any], streams: Dict[str, Any],
                        callback_group) -> Optional[ZenohLink]:
    """With zenoh: swap each robot stream's DDS `frames` input for zenoh, tee its downlink.

    `streams` maps names to RobotStream objects (sub, png_pub, stats_pub, key_pub); frames go
    to `node.on_frame(stream, msg)` in `callback_group`, as DDS frames do. Returns the link
    (None with dds); the node keeps it.
    """
    settings = UplinkSettings.from_values(values, listen=True)
    if settings.transport == 'dds':
        return None
    robots = {robot_name(name): stream for name, stream in streams.items()}
    session = open_session(session_settings(settings.endpoint, settings.keys_dir, SERVER_NAME,
                                            True, settings.max_message_bytes, list(robots)))
    link = ZenohLink(node, session, settings.queue_depth, callback_group)
    for robot, stream in robots.items():
        node.destroy_subscription(stream.sub)  # frames come only from authenticated robots
        for (topic, _, _), attr in zip(DOWNLINK, DOWNLINK_ATTRS):
            setattr(stream, attr, TeePublisher(getattr(stream, attr),
                                               ZenohPublisher(session, down_key(robot, topic))))
        link.route(node.guard, Inbox(session, frames_key(robot), EncodedFrame,
                                     settings.queue_depth),
                   lambda msg, s=stream: node.on_frame(s, msg), on_error=stream._count_rejected)
    node.get_logger().info(f"uplink: zenoh router on {settings.endpoint} for "
                           f"{', '.join(robots)} (mutual TLS, per-robot access control)")
    return link
