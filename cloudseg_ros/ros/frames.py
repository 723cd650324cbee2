"""EncodedFrame / PipelineStats <-> core dataclasses."""
import math
from typing import Dict

from cloudseg_ros.core.receiver import DecodedFrame, FrameMeta, StreamReceiver
from cloudseg_ros.msg import EncodedFrame, PipelineStats
from cloudseg_ros.ros.conversions import copy_header, stamp_to_s


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
