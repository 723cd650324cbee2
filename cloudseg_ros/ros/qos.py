"""Named QoS profiles: every publisher and subscription in the package uses one of these.

They follow REP-2003: publishers of sensor data (images) are reliable, subscribers to them best
effort, so every subscriber receives: rviz2 (reliable by default), rosbag2 (which asks for
reliable when every publisher offers it) and `ros2 topic` (sensor data). The uplink (`frames`)
is the deliberate exception, best effort on both ends (ENCODED_STREAM).

- IMAGE: publishers of images: the camera (`image_raw`), the uplink preview
  (`image_lowres/compressed`) and the masks (`mask`, `mask_color`, `mask/compressed`).
  Reliable keep-last-1: reliable and best-effort subscribers both receive, and a slow reliable
  one gets the newest image, never a backlog.
- SENSOR: subscriptions to images (the sensor-data profile with a depth-1 queue). Best effort,
  keep last 1: a late frame is worth nothing, and a depth-1 queue drops stale frames instead
  of building latency.
- ENCODED_STREAM: encoded frames on the uplink. Best effort, but depth 5: an H.264 decoder needs
  every frame of its reference chain, so the cloud decodes each one as it arrives and drops
  stale frames itself, after decoding (see core/frame_slots.py).
- STATS: per-frame statistics and control messages (key-frame requests). Reliable, depth 10.
- STATUS: latched state (controller decision). Reliable, transient local, depth 1, so a late
  subscriber (rviz, a plot) gets the last value at once.
- SERVER_POOL: the cloud servers' heartbeats (`/cloudseg/server_pool/<name>`). Reliable,
  volatile, depth 64: several servers share one topic, and a stale heartbeat is worthless.
- DIAGNOSTICS: `/diagnostics` health reports. Reliable, volatile, depth 10, as
  diagnostic_updater publishes them (the aggregator and rqt_robot_monitor subscribe reliable).
"""
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy)

try:
    from rclpy.event_handler import PublisherEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import PublisherEventCallbacks

SENSOR = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                    reliability=ReliabilityPolicy.BEST_EFFORT,
                    durability=DurabilityPolicy.VOLATILE)

ENCODED_STREAM = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                            reliability=ReliabilityPolicy.BEST_EFFORT,
                            durability=DurabilityPolicy.VOLATILE)

IMAGE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                   reliability=ReliabilityPolicy.RELIABLE,
                   durability=DurabilityPolicy.VOLATILE)

STATS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                   reliability=ReliabilityPolicy.RELIABLE,
                   durability=DurabilityPolicy.VOLATILE)

STATUS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                    reliability=ReliabilityPolicy.RELIABLE,
                    durability=DurabilityPolicy.TRANSIENT_LOCAL)

DIAGNOSTICS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)

SERVER_POOL = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=64,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)


def fleet_publisher_events() -> PublisherEventCallbacks:
    """Event callbacks for the cloud's per-robot publishers: none, not even rclpy's defaults.

    rclpy gives every publisher a default incompatible-QoS handler, a waitable the executor
    walks in Python on every turn. The cloud has five publishers per robot: with 16 robots
    these handlers took about a third of the executor thread's time on the H200 (py-spy,
    docs/FLEET.md), and that thread shares the GIL with inference. A subscriber with an
    incompatible QoS still gets rclpy's warning in its own process.
    """
    return PublisherEventCallbacks(use_default_callbacks=False)
