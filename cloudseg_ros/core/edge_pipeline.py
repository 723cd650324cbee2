"""The robot side of CloudSeg without ROS: select -> downsample -> encode.

`EdgePipeline.process(rgb, t_s)` returns None for a skipped frame, or an `EdgeFrame` holding the
payload and what the receiver needs to rebuild the original resolution. The edge node only
converts messages and calls this.
"""
import time
from dataclasses import dataclass, replace
from typing import Dict, Optional

import numpy as np

from cloudseg_ros.core.codecs import (CODECS, check_x264_preset, EDGE_DEFAULT_X264_PRESET,
                                      EDGE_X264_PRESETS, FrameEncoder)
from cloudseg_ros.core.imageops import downsample, validate_rgb
from cloudseg_ros.core.selector import FrameKind, FrameSelector, SelectorConfig

SCALES = (1, 2, 3, 4)
PROBE_JPEG_QUALITY = 90
# The cloud asks for a key frame at most every 0.5 s while it waits for one (its
# KEYFRAME_REQUEST_PERIOD_S), so honouring requests faster than that never helps a real
# receiver; it only lets a flood of requests (anyone can publish them) turn every frame into a
# key frame several times its size.
KEY_REQUEST_MIN_INTERVAL_S = 0.5


@dataclass(frozen=True)
class EdgeConfig:
    """Every tunable of the robot side; `validate()` says what is wrong."""

    scale: int = 4              # downsampling factor before encoding (1, 2, 3, 4)
    codec: str = 'jpeg'         # 'jpeg' or 'h264'
    jpeg_quality: int = 75      # 1..100
    h264_crf: int = 28          # 0..51, lower is better quality
    h264_preset: str = EDGE_DEFAULT_X264_PRESET  # x264 speed: slower = fewer bits, more CPU
    max_rate_hz: float = 15.0   # never send faster than this
    useful_threshold: float = 0.03  # content deviation vs last sent frame to send it
    key_threshold: float = 0.20     # content deviation vs last key frame to make a key frame
    max_interval_s: float = 2.0     # send at least this often, even for a static scene

    def selector_config(self) -> SelectorConfig:
        """Return the frame selector's part of the configuration."""
        return SelectorConfig(useful_threshold=self.useful_threshold,
                              key_threshold=self.key_threshold,
                              max_interval_s=self.max_interval_s,
                              max_rate_hz=self.max_rate_hz)

    def validate(self) -> 'EdgeConfig':
        """Raise ValueError with the reason if the combination is invalid; return self."""
        if self.scale not in SCALES:
            raise ValueError(f'scale={self.scale} must be one of {SCALES}')
        if self.codec not in CODECS:
            raise ValueError(f"codec='{self.codec}' must be one of {CODECS}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f'jpeg_quality={self.jpeg_quality} must be in 1..100')
        if not 0 <= self.h264_crf <= 51:
            raise ValueError(f'h264_crf={self.h264_crf} must be in 0..51')
        check_x264_preset(self.h264_preset, EDGE_X264_PRESETS)
        self.selector_config().validate()
        return self


@dataclass
class EdgeFrame:
    """One frame to send."""

    kind: FrameKind
    data: bytes
    keyframe: bool          # payload decodes on its own
    codec: str
    scale: int
    width: int              # payload resolution
    height: int
    orig_width: int
    orig_height: int
    encode_ms: float        # select + downsample + encode
    lowres: Optional[np.ndarray] = None  # the (H, W, 3) RGB image that was encoded


class EdgePipeline:
    """Frame selector + downsampler + encoder with live reconfiguration."""

    def __init__(self, config: EdgeConfig) -> None:
        self.config = config.validate()
        self.selector = FrameSelector(config.selector_config())
        self.encoder = FrameEncoder(codec=config.codec, jpeg_quality=config.jpeg_quality,
                                    h264_crf=config.h264_crf, h264_preset=config.h264_preset)
        # Probes (full resolution, for the accuracy watchdog) go through their own JPEG encoder
        # so they never restart the H.264 stream with a resolution change.
        self.probe_encoder = FrameEncoder(codec='jpeg', jpeg_quality=PROBE_JPEG_QUALITY)
        self._key_requested = False
        self._last_remote_key_s = -float('inf')
        self.key_requests_ignored = 0

    def reconfigure(self, config: EdgeConfig) -> None:
        """Apply a new configuration from the next frame on (validated first)."""
        config.validate()
        self.selector.reconfigure(config.selector_config())
        self.encoder.reconfigure(codec=config.codec, jpeg_quality=config.jpeg_quality,
                                 h264_crf=config.h264_crf, h264_preset=config.h264_preset)
        if (config.scale, config.codec) != (self.config.scale, self.config.codec):
            # A new stream geometry or codec: the receiver needs a self-contained frame.
            self.request_key()
        self.config = config

    def request_key(self) -> None:
        """Make the next sent frame a key frame (H.264 IDR): the receiver lost the stream."""
        self._key_requested = True
        self.selector.request_key()

    def remote_key_request(self, now_s: float) -> bool:
        """Honour a receiver's key-frame request, at most one per KEY_REQUEST_MIN_INTERVAL_S.

        `now_s` is a monotonic clock; return whether this request was honoured.
        """
        if now_s - self._last_remote_key_s < KEY_REQUEST_MIN_INTERVAL_S:
            self.key_requests_ignored += 1
            return False
        self._last_remote_key_s = now_s
        self.request_key()
        return True

    def process(self, rgb: np.ndarray, t_s: float,
                force_kind: Optional[FrameKind] = None) -> Optional[EdgeFrame]:
        """Select, downsample and encode one camera frame; None when the selector skips it."""
        start = time.perf_counter()
        validate_rgb(rgb)
        kind = force_kind if force_kind is not None else self.selector.decide(rgb, t_s).kind
        if kind == FrameKind.SKIP:
            return None
        if kind == FrameKind.PROBE:
            scale, small = 1, rgb
            encoded = self.probe_encoder.encode(small)
        else:
            scale = self.config.scale
            small = downsample(rgb, scale)
            force_idr = self._key_requested or kind == FrameKind.KEY
            encoded = self.encoder.encode(small, force_keyframe=force_idr)
            if encoded.keyframe:
                self._key_requested = False
        return EdgeFrame(kind=kind, data=encoded.data, keyframe=encoded.keyframe,
                         codec=encoded.codec, scale=scale, width=small.shape[1],
                         height=small.shape[0], orig_width=rgb.shape[1],
                         orig_height=rgb.shape[0],
                         encode_ms=(time.perf_counter() - start) * 1e3, lowres=small)

    @property
    def counts(self) -> Dict[FrameKind, int]:
        """Frames per kind decided by the selector so far."""
        return self.selector.counts


def with_changes(config: EdgeConfig, **changes) -> EdgeConfig:
    """Return a validated copy of `config` with some fields changed."""
    return replace(config, **changes).validate()
