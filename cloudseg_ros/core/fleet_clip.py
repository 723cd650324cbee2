"""Pre-encoded uplink frames of a clip, for synthetic robots (`cloudseg bench-fleet`).

A synthetic robot must cost the benchmark machine almost nothing while it streams, so that the
numbers measure the cloud: every frame is resized, downsampled and encoded once, before the
stream starts, exactly as the edge node would send it (same `downsample`, same encoders).
H.264 clips start with an IDR and hold P frames after it; a robot answering a key-frame
request restarts from frame 0.
"""
from dataclasses import dataclass
from typing import List, Tuple

import cv2

from cloudseg_ros.core.codecs import EDGE_DEFAULT_X264_PRESET, FrameEncoder
from cloudseg_ros.core.imageops import downsample
from cloudseg_ros.core.sources import FrameSource, SourceError


@dataclass(frozen=True)
class ClipFrame:
    """One encoded uplink frame and what its EncodedFrame declares."""

    data: bytes
    keyframe: bool
    width: int   # payload (sent) size
    height: int


def encode_clip(path: str, size: Tuple[int, int], scale: int, codec: str,
                max_frames: int, jpeg_quality: int = 80, h264_crf: int = 28) -> List[ClipFrame]:
    """Read up to `max_frames` of `path`, resize to `size` (W, H), downsample, encode.

    Raises SourceError when the clip has no readable frame, ValueError on bad settings.
    """
    if max_frames < 1:
        raise ValueError(f'max_frames must be >= 1, got {max_frames}')
    width, height = size
    source = FrameSource(path, loop=False)
    # H.264 as a robot sends it (the edge's default preset), not the encoder class's default.
    encoder = FrameEncoder(codec, jpeg_quality=jpeg_quality, h264_crf=h264_crf,
                           h264_preset=EDGE_DEFAULT_X264_PRESET)
    frames: List[ClipFrame] = []
    try:
        for rgb in source.frames():
            if rgb.shape[:2] != (height, width):
                rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
            small = downsample(rgb, scale)
            enc = encoder.encode(small, force_keyframe=not frames)
            frames.append(ClipFrame(enc.data, enc.keyframe, enc.width, enc.height))
            if len(frames) >= max_frames:
                break
    finally:
        source.close()
    if not frames:
        raise SourceError(f"no readable frame in '{path}'")
    return frames
