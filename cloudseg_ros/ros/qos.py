"""Named QoS profiles: every publisher and subscription in the package uses one of these.

- SENSOR: camera images and encoded frames. Best effort, keep last 1: a late frame is worth
  nothing, and a depth-1 queue drops stale frames instead of building latency.
- ENCODED_STREAM: encoded frames on the uplink. Best effort, but depth 5: an H.264 decoder needs
  every frame of its reference chain, so the cloud decodes each one as it arrives and drops
  stale frames itself, after decoding (see core/frame_slots.py).
- RESULT: masks going back to the robot. Reliable keep-last-1, so both best-effort (rviz's
  sensor setting) and reliable (rviz's default) subscribers receive them, with no backlog.
- STATS: per-frame statistics and control messages (key-frame requests). Reliable, depth 10.
- STATUS: latched state (controller decision). Reliable, transient local, depth 1, so a late
  subscriber (rviz, a plot) gets the last value at once.
"""
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy)

SENSOR = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                    reliability=ReliabilityPolicy.BEST_EFFORT,
                    durability=DurabilityPolicy.VOLATILE)

ENCODED_STREAM = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                            reliability=ReliabilityPolicy.BEST_EFFORT,
                            durability=DurabilityPolicy.VOLATILE)

RESULT = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                    reliability=ReliabilityPolicy.RELIABLE,
                    durability=DurabilityPolicy.VOLATILE)

STATS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                   reliability=ReliabilityPolicy.RELIABLE,
                   durability=DurabilityPolicy.VOLATILE)

STATUS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                    reliability=ReliabilityPolicy.RELIABLE,
                    durability=DurabilityPolicy.TRANSIENT_LOCAL)
