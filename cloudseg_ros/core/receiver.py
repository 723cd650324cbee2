"""The cloud's receiving end of one robot's stream, without ROS: check, decode, count.

`StreamReceiver.receive()` turns one encoded frame into an RGB image or raises `ReceiveError`
with a reason (and whether the robot must send a key frame for the stream to recover). It keeps
the counters the statistics report: frames in, rejected, lost (sequence gaps), bytes.
"""
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from cloudseg_ros.core.codecs import CODECS, CodecError, FrameDecoder

MAX_SIDE = 8192
SCALES = (1, 2, 3, 4)


class ReceiveError(ValueError):
    """A frame that cannot be used; `want_keyframe` asks the sender for a key frame."""

    def __init__(self, reason: str, want_keyframe: bool = False) -> None:
        super().__init__(reason)
        self.want_keyframe = want_keyframe


@dataclass(frozen=True)
class FrameMeta:
    """What the sender declared about a frame (fields of cloudseg_ros/EncodedFrame)."""

    seq: int
    kind: int
    codec: str
    width: int
    height: int
    orig_width: int
    orig_height: int
    scale: int
    keyframe: bool
    stamp_s: float  # acquisition time at the robot


@dataclass
class DecodedFrame:
    """A decoded frame ready for the engine."""

    meta: FrameMeta
    rgb: np.ndarray          # (height, width, 3) uint8
    nbytes: int
    decode_ms: float
    arrival_s: float         # monotonic time of arrival here
    arrival_gap_ms: float    # since the previous frame of this stream


def check_meta(meta: FrameMeta, nbytes: int) -> None:
    """Raise ReceiveError if the declared figures cannot describe a valid frame."""
    if meta.codec not in CODECS:
        raise ReceiveError(f"unknown codec '{meta.codec}' (known: {', '.join(CODECS)})")
    if nbytes == 0:
        raise ReceiveError('empty payload')
    if not (0 < meta.width <= MAX_SIDE and 0 < meta.height <= MAX_SIDE):
        raise ReceiveError(f'declared size {meta.width}x{meta.height} out of 1..{MAX_SIDE}')
    if meta.scale not in SCALES:
        raise ReceiveError(f'scale {meta.scale} not one of {SCALES}')
    if (meta.orig_width // meta.scale, meta.orig_height // meta.scale) != (meta.width,
                                                                           meta.height):
        raise ReceiveError(f'declared original {meta.orig_width}x{meta.orig_height} at scale '
                           f'{meta.scale} does not give {meta.width}x{meta.height}')


class StreamReceiver:
    """Per-robot decoder state and counters."""

    def __init__(self) -> None:
        self._decoder = FrameDecoder()
        self._last_seq: Optional[int] = None
        self._last_arrival_s: Optional[float] = None
        self.frames_in = 0
        self.rejected = 0
        self.lost = 0
        self.bytes_total = 0

    def receive(self, meta: FrameMeta, data: bytes,
                arrival_s: Optional[float] = None) -> DecodedFrame:
        """Check and decode one frame; raise ReceiveError (counted) when it is unusable."""
        arrival_s = time.monotonic() if arrival_s is None else arrival_s
        gap_ms = 0.0 if self._last_arrival_s is None else (arrival_s - self._last_arrival_s) * 1e3
        self._last_arrival_s = arrival_s
        self.frames_in += 1
        self.bytes_total += len(data)
        lost_now = self._track_seq(meta.seq)
        try:
            check_meta(meta, len(data))
            if lost_now and meta.codec == 'h264':
                # A lost H.264 frame breaks the reference chain: wait for the next IDR.
                self._decoder = FrameDecoder()
            start = time.perf_counter()
            rgb = self._decode(meta, data)
        except ReceiveError:
            self.rejected += 1
            raise
        return DecodedFrame(meta=meta, rgb=rgb, nbytes=len(data),
                            decode_ms=(time.perf_counter() - start) * 1e3,
                            arrival_s=arrival_s, arrival_gap_ms=gap_ms)

    def _decode(self, meta: FrameMeta, data: bytes) -> np.ndarray:
        if meta.codec == 'h264' and self._decoder.needs_keyframe and not meta.keyframe:
            raise ReceiveError('H.264 stream has no reference frame (lost or joined late): '
                               'waiting for a key frame', want_keyframe=True)
        try:
            return self._decoder.decode(meta.codec, data, meta.width, meta.height)
        except CodecError as err:
            raise ReceiveError(f'undecodable {meta.codec} payload: {err}',
                               want_keyframe=meta.codec == 'h264') from err

    def _track_seq(self, seq: int) -> bool:
        """Count frames missing before `seq`; True if any were lost just now."""
        lost = 0
        if self._last_seq is not None and seq > self._last_seq + 1:
            lost = seq - self._last_seq - 1
        if self._last_seq is None or seq > self._last_seq:
            self._last_seq = seq
        elif seq < self._last_seq - 1000:
            self._last_seq = seq  # the sender restarted its counter
        self.lost += lost
        return lost > 0
