"""EncodedFrame / PipelineStats <-> core dataclasses, and when a frame arrived."""
import math
from typing import Dict, Mapping, Optional

from rclpy.clock import Clock
from rclpy.time import Time

from cloudseg_ros.core.receiver import DecodedFrame, FrameMeta, StreamReceiver
from cloudseg_ros.msg import EncodedFrame, PipelineStats
from cloudseg_ros.ros.conversions import copy_header, stamp_to_s


# A middleware receive stamp further than this from the node's clock is on another clock (or
# broken): the node's clock reading is used instead.
MAX_RECEIVE_STAMP_AGE_S = 5.0


def arrival_time(clock: Clock, info: Optional[Mapping] = None) -> Time:
    """When the middleware received a message: `info['received_timestamp']`, else `clock.now()`.

    `info` is the MessageInfo that rclpy passes to a subscription callback taking `(msg, info)`
    (Humble, Jazzy, Kilted: a dict with 'received_timestamp' in ns of the system clock, 0 where
    the middleware does not fill it). The callback itself may run much later: it waits for a
    free executor thread and for Python's GIL while inference runs, and that wait is the
    cloud's CPU load, not the link's queue; stamped in the callback it read as congestion
    (docs/WAN.md, section 4). Under simulated time the receive stamp is on another clock than
    the frame stamps, so the clock's reading is used.
    """
    now = clock.now()
    if info is None or getattr(clock, 'ros_time_is_active', False):
        return now
    try:
        received_ns = int(info.get('received_timestamp', 0))
    except (AttributeError, TypeError, ValueError):
        return now
    if received_ns <= 0 or abs(now.nanoseconds - received_ns) > MAX_RECEIVE_STAMP_AGE_S * 1e9:
        return now
    return Time(nanoseconds=min(received_ns, now.nanoseconds), clock_type=now.clock_type)


def meta_from_msg(msg: EncodedFrame) -> FrameMeta:
    """Return the declared figures of an encoded frame."""
    return FrameMeta(seq=msg.seq, kind=msg.kind, codec=msg.codec, width=msg.width,
                     height=msg.height, orig_width=msg.orig_width,
                     orig_height=msg.orig_height, scale=msg.scale, keyframe=msg.keyframe,
                     stamp_s=stamp_to_s(msg.header.stamp), session_id=msg.session_id)


def cloud_stats_msg(header, arrival_stamp, frame: DecodedFrame, receiver: StreamReceiver,
                    superseded: int, timings_ms: Dict[str, float], batch_size: int,
                    now_s: float, agreement: float = math.nan,
                    stage: str = 'cloud') -> PipelineStats:
    """Per-frame statistics of the cloud stage; latency is measured on this host's clock.

    stage 'cloud_rx' is the arrival record (no inference timings), 'cloud' the segmented frame.
    The time from arrival to `now_s` (this report) is split into inference (SR + segmentation)
    and queue (the rest: decoding, waiting for the engine, publishing), so the robot can tell
    time spent at the cloud from time spent on the link.
    """
    meta = frame.meta
    inference_ms = timings_ms.get('total', 0.0)
    at_cloud_ms = max(0.0, (now_s - stamp_to_s(arrival_stamp)) * 1e3)
    queue_ms = max(0.0, at_cloud_ms - inference_ms) if stage != 'cloud_rx' else 0.0
    return PipelineStats(
        header=copy_header(header), stage=stage, arrival_stamp=arrival_stamp, seq=meta.seq,
        kind=meta.kind,
        frames_in=receiver.frames_in, frames_skipped=superseded,
        frames_rejected=receiver.rejected, frames_lost=receiver.lost,
        bytes_total=receiver.bytes_total, frame_bytes=frame.nbytes, width=meta.width,
        height=meta.height, decode_ms=frame.decode_ms, sr_ms=timings_ms.get('sr', 0.0),
        seg_ms=timings_ms.get('seg', 0.0),
        total_ms=frame.decode_ms + timings_ms.get('total', 0.0),
        latency_ms=(now_s - meta.stamp_s) * 1e3, arrival_gap_ms=frame.arrival_gap_ms,
        batch_size=batch_size, probe_agreement_miou=agreement, queue_ms=queue_ms,
        inference_ms=inference_ms)
