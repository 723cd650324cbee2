"""The cloud's receiving end of one robot's stream, without ROS: check, decode, count.

`StreamReceiver.receive()` turns one encoded frame into an RGB image or raises `ReceiveError`
with a reason (and whether the robot must send a key frame for the stream to recover). It keeps
the counters the statistics report: frames in, rejected, lost (sequence gaps), bytes.

Nothing a peer declares sizes the work: `ReceiveLimits` (the cloud's parameters) bound the
payload bytes, the payload's pixels and the original (= super-resolved, segmented) pixels, and
are checked from the declared figures before anything is decoded or allocated; the codecs then
check the JPEG header / H.264 SPS against the declared size. Sequence numbers are compared
modulo 2^64, and a new `session_id` (a restarted edge) starts the stream afresh.
"""
import math
import threading
import time
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from cloudseg_ros.core.codecs import CODECS, CodecError, FrameDecoder
from cloudseg_ros.core.peer_input import printable
from cloudseg_ros.core.rate_limit import TokenBucket

MAX_SIDE = 8192
SCALES = (1, 2, 3, 4)
SEQ_MODULUS = 1 << 64  # EncodedFrame.seq is a uint64: its arithmetic wraps around
# A sequence number this far ahead is a discontinuity (a sender that restarted without a session
# id, or a forged number), not 65,536 lost frames: at 15 fps that is over an hour of loss.
MAX_SEQ_GAP = 1 << 16
# Up to this far behind the last one, a frame is late (reordered) or a duplicate; further back,
# the sender restarted its counter.
SEQ_REORDER_WINDOW = 64


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
    session_id: int = 0  # random per start of the sender; 0 = not sent


@dataclass(frozen=True)
class ReceiveLimits:
    """Resource bounds set by configuration; a frame declaring more is rejected unread.

    The defaults admit 1920x1080 and 2048x1024 cameras (and their full-resolution probes) and
    refuse 2560x1440 and above: on a CPU server super-resolving and segmenting 2.8 MP took
    14 s and 2 GB for one frame, and 67 MP (8192x8192) ran the process out of memory.
    """

    max_input_pixels: int = 2_400_000    # payload width x height (declared, then decoded)
    max_output_pixels: int = 2_400_000   # declared original width x height = SR / mask size
    max_payload_bytes: int = 4_000_000   # encoded payload (a 1080p JPEG probe is < 1.5 MB)
    # Frames per second from one robot, averaged over a second (bursts of one second's worth
    # pass). Unlimited here, for offline use; the cloud node's parameter defaults to 120 Hz.
    max_frame_rate_hz: float = math.inf

    def validate(self) -> 'ReceiveLimits':
        """Raise ValueError unless every bound is a positive number; return self."""
        for name in ('max_input_pixels', 'max_output_pixels', 'max_payload_bytes'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'{name} must be an integer >= 1, got {value!r}')
        rate = self.max_frame_rate_hz
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate >= 1:
            raise ValueError(f'max_frame_rate_hz must be a number >= 1, got {rate!r}')
        return self


@dataclass
class DecodedFrame:
    """A decoded frame ready for the engine."""

    meta: FrameMeta
    rgb: np.ndarray          # (height, width, 3) uint8
    nbytes: int
    decode_ms: float
    arrival_s: float         # monotonic time of arrival here
    arrival_gap_ms: float    # since the previous frame of this stream


@dataclass(frozen=True)
class Admitted:
    """A frame that passed `StreamReceiver.admit()`, waiting to be decoded."""

    meta: FrameMeta
    arrival_s: float
    gap_ms: float


def check_meta(meta: FrameMeta, nbytes: int, limits: ReceiveLimits = ReceiveLimits()) -> None:
    """Raise ReceiveError if the declared figures cannot describe a valid frame within limits."""
    if meta.codec not in CODECS:
        raise ReceiveError(f"unknown codec '{printable(meta.codec)}' "
                           f"(known: {', '.join(CODECS)})")
    if nbytes == 0:
        raise ReceiveError('empty payload')
    if nbytes > limits.max_payload_bytes:
        raise ReceiveError(f'payload of {nbytes} bytes exceeds max_payload_bytes '
                           f'{limits.max_payload_bytes}')
    if not (0 < meta.width <= MAX_SIDE and 0 < meta.height <= MAX_SIDE):
        raise ReceiveError(f'declared size {meta.width}x{meta.height} out of 1..{MAX_SIDE}')
    if meta.scale not in SCALES:
        raise ReceiveError(f'scale {meta.scale} not one of {SCALES}')
    if (meta.orig_width // meta.scale, meta.orig_height // meta.scale) != (meta.width,
                                                                           meta.height):
        raise ReceiveError(f'declared original {meta.orig_width}x{meta.orig_height} at scale '
                           f'{meta.scale} does not give {meta.width}x{meta.height}')
    if meta.width * meta.height > limits.max_input_pixels:
        raise ReceiveError(f'payload {meta.width}x{meta.height} exceeds max_input_pixels '
                           f'{limits.max_input_pixels}')
    if meta.orig_width * meta.orig_height > limits.max_output_pixels:
        raise ReceiveError(f'original {meta.orig_width}x{meta.orig_height} exceeds '
                           f'max_output_pixels {limits.max_output_pixels}')


def check_probe_twin(probe: FrameMeta, twin_size: Tuple[int, int]) -> None:
    """Raise ReceiveError unless a probe can be compared with its low-resolution twin.

    `twin_size` is the (width, height) of the twin's original, i.e. of the pipeline's mask: the
    full-resolution probe of the same image must have exactly that size.
    """
    if tuple(twin_size) != (probe.width, probe.height):
        raise ReceiveError(f'probe {probe.width}x{probe.height} does not match the '
                           f'{twin_size[0]}x{twin_size[1]} original of the frame with its stamp')


def seq_delta(seq: int, last: int) -> int:
    """Return `seq - last` modulo 2^64, as a signed number in [-2^63, 2^63)."""
    delta = (seq - last) % SEQ_MODULUS
    return delta - SEQ_MODULUS if delta >= SEQ_MODULUS // 2 else delta


class StreamReceiver:
    """Per-robot decoder state and counters.

    Frames are admitted on the node's receive thread and decoded on its decode lanes;
    rejections are counted from those and from the inference thread (`count_rejected()`), so
    that counter is behind a lock.
    """

    def __init__(self, limits: Optional[ReceiveLimits] = None) -> None:
        self.limits = (limits or ReceiveLimits()).validate()
        rate_hz = self.limits.max_frame_rate_hz
        self._rate = TokenBucket(rate_hz, burst=rate_hz) if math.isfinite(rate_hz) else None
        self._decoder = self._new_decoder()
        self._session: Optional[int] = None
        self._last_seq: Optional[int] = None
        self._last_arrival_s: Optional[float] = None
        self.frames_in = 0
        self._rejected = 0
        self._rejected_lock = threading.Lock()
        self.lost = 0
        self.bytes_total = 0
        self.backlog_dropped = 0  # admitted, then dropped before decoding (also in rejected)
        self.sessions = 0  # session ids seen change (sender restarts)
        self.seq_jumps = 0  # sequence discontinuities without a session change

    def _new_decoder(self) -> FrameDecoder:
        return FrameDecoder(max_pixels=self.limits.max_input_pixels)

    def receive(self, meta: FrameMeta, data: bytes,
                arrival_s: Optional[float] = None) -> DecodedFrame:
        """Check and decode one frame; raise ReceiveError (counted) when it is unusable."""
        admitted = self.admit(meta, data, arrival_s)
        return self.decode(admitted, data)

    def admit(self, meta: FrameMeta, data: bytes,
              arrival_s: Optional[float] = None) -> 'Admitted':
        """Count and check a frame without decoding it (cheap: the receive callback's part).

        Raises ReceiveError (counted) for a frame over the rate or resource limits. `decode()`
        finishes the job, on another thread if need be, in arrival order per stream.
        """
        arrival_s = time.monotonic() if arrival_s is None else arrival_s
        gap_ms = 0.0 if self._last_arrival_s is None else (arrival_s - self._last_arrival_s) * 1e3
        self._last_arrival_s = arrival_s
        self.frames_in += 1
        self.bytes_total += len(data)
        self._track_session(meta.session_id)
        lost_now = self._track_seq(meta.seq)
        try:
            if self._rate is not None and not self._rate.allow(arrival_s):
                self._skip_decoding(meta)
                raise ReceiveError(f'more than max_frame_rate_hz {self.limits.max_frame_rate_hz}'
                                   ' frames per second from this robot',
                                   want_keyframe=meta.codec == 'h264')
            check_meta(meta, len(data), self.limits)
        except ReceiveError:
            self.count_rejected()
            raise
        if lost_now and meta.codec == 'h264':
            # A lost H.264 frame breaks the reference chain: wait for the next IDR.
            self._decoder = self._new_decoder()
        return Admitted(meta, arrival_s, gap_ms)

    def decode(self, admitted: 'Admitted', data: bytes) -> DecodedFrame:
        """Decode an admitted frame (in arrival order per stream); ReceiveError is counted."""
        meta = admitted.meta
        start = time.perf_counter()
        try:
            rgb = self._decode(meta, data)
        except ReceiveError:
            self.count_rejected()
            raise
        return DecodedFrame(meta=meta, rgb=rgb, nbytes=len(data),
                            decode_ms=(time.perf_counter() - start) * 1e3,
                            arrival_s=admitted.arrival_s, arrival_gap_ms=admitted.gap_ms)

    def drop_admitted(self, admitted: 'Admitted', reason: str) -> ReceiveError:
        """Count an admitted frame dropped undecoded (e.g. a full backlog); return its error.

        An H.264 stream then waits for an IDR (the error asks for one).
        """
        self.backlog_dropped += 1
        self.count_rejected()
        self._skip_decoding(admitted.meta)
        return ReceiveError(reason, want_keyframe=admitted.meta.codec == 'h264')

    @property
    def rejected(self) -> int:
        """Frames rejected so far, by this receiver or by later stages (`count_rejected`)."""
        return self._rejected

    def count_rejected(self) -> None:
        """Count one rejected frame; safe from any thread."""
        with self._rejected_lock:
            self._rejected += 1

    @property
    def rate_limited(self) -> int:
        """Frames dropped by max_frame_rate_hz so far (also counted in `rejected`)."""
        return 0 if self._rate is None else self._rate.refused

    def _skip_decoding(self, meta: FrameMeta) -> None:
        """A frame dropped undecoded breaks an H.264 reference chain: wait for an IDR."""
        if meta.codec == 'h264':
            self._decoder = self._new_decoder()

    def _decode(self, meta: FrameMeta, data: bytes) -> np.ndarray:
        if meta.codec == 'h264' and self._decoder.needs_keyframe and not meta.keyframe:
            raise ReceiveError('H.264 stream has no reference frame (lost or joined late): '
                               'waiting for a key frame', want_keyframe=True)
        try:
            return self._decoder.decode(meta.codec, data, meta.width, meta.height)
        except CodecError as err:
            raise ReceiveError(f'undecodable {meta.codec} payload: {err}',
                               want_keyframe=meta.codec == 'h264') from err

    def _track_session(self, session_id: int) -> None:
        """A new session is a new stream: new sequence numbers, and H.264 waits for an IDR."""
        if self._session is not None and session_id != self._session:
            self.sessions += 1
            self._last_seq = None
            self._decoder = self._new_decoder()
        self._session = session_id

    def _track_seq(self, seq: int) -> bool:
        """Count frames missing before `seq` (modulo 2^64); True if continuity broke just now."""
        seq %= SEQ_MODULUS
        if self._last_seq is None:
            self._last_seq = seq
            return False
        delta = seq_delta(seq, self._last_seq)
        if -SEQ_REORDER_WINDOW <= delta <= 0:
            return False  # late or duplicate: nothing new is missing
        if 0 < delta <= MAX_SEQ_GAP:
            self.lost += delta - 1
            self._last_seq = seq
            return delta > 1
        # Restarted counter or forged number: follow the new numbering, count no loss (the
        # number is meaningless), but the stream is broken for H.264 all the same.
        self.seq_jumps += 1
        self._last_seq = seq
        return True
