"""Uplink image codecs: JPEG (simplejpeg) and low-latency H.264 (PyAV / libx264).

JPEG frames stand alone. H.264 frames form a stream: one access unit (Annex-B bytes) per frame,
no B-frames and no lookahead, so every encode() returns exactly the frame just given and the
cloud can decode it at once. IDRs happen only at the start, after a restart, or when asked
(the selector's KEY frames); each carries SPS/PPS so a decoder can join at any IDR.

Colour conversion uses OpenCV's I420 routines on both sides (BT.601, limited range, the H.264
default when the stream does not say otherwise), so the round trip adds no colour shift.
"""
from dataclasses import dataclass
from fractions import Fraction
from typing import List, Optional, Sequence, Tuple

import av
import cv2
import numpy as np

from cloudseg_ros.core.imageops import ImageError, validate_rgb
from cloudseg_ros.core.peer_input import printable

try:
    import simplejpeg
except ImportError:  # the cv2 fallback is slower but keeps JPEG working everywhere
    simplejpeg = None

CODECS = ('jpeg', 'h264')
X264_PRESETS = ('ultrafast', 'superfast', 'veryfast', 'faster', 'fast', 'medium', 'slow',
                'slower', 'veryslow', 'placebo')
# What a robot may choose: slower presets cost several times the CPU for a few % fewer bits.
EDGE_X264_PRESETS = X264_PRESETS[:6]
DEFAULT_X264_PRESET = 'ultrafast'  # the encoder classes' default (and the training data's)
# The robot's default: at equal accuracy about half the bits of ultrafast for 0.2-2 ms more per
# frame at uplink sizes (docs/bench_stream.md, "The robot's x264 preset").
EDGE_DEFAULT_X264_PRESET = 'veryfast'
NAL_IDR = 5  # H.264 nal_unit_type of an IDR slice
MAX_SIDE = 8192  # refuse declared sizes beyond this (a corrupt header must not allocate GBs)
# IDRs only on request: no periodic keyframes and no scene-cut detection (the selector decides);
# repeat-headers puts SPS/PPS before every IDR so decoders can join there.
_X264_PARAMS = 'keyint=infinite:scenecut=0:bframes=0:repeat-headers=1:annexb=1'


class CodecError(Exception):
    """A payload that cannot be encoded or decoded; the message says why."""


def check_jpeg_quality(quality: int) -> int:
    """Return `quality` if it is an int in 1..100, else raise ValueError."""
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)):
        raise ValueError(f'jpeg quality must be an integer 1..100, got {quality!r}')
    if not 1 <= quality <= 100:
        raise ValueError(f'jpeg quality must be 1..100, got {quality}')
    return int(quality)


def check_x264_preset(preset: str, allowed: Sequence[str] = X264_PRESETS) -> str:
    """Return `preset` if libx264 knows it (and it is in `allowed`), else ValueError."""
    if preset not in allowed:
        raise ValueError(f'unknown x264 preset {preset!r}; one of {tuple(allowed)}')
    return preset


def check_crf(crf: int) -> int:
    """Return `crf` if it is an int in 0..51 (x264's range), else raise ValueError."""
    if isinstance(crf, bool) or not isinstance(crf, (int, np.integer)):
        raise ValueError(f'h264 crf must be an integer 0..51, got {crf!r}')
    if not 0 <= crf <= 51:
        raise ValueError(f'h264 crf must be 0..51, got {crf}')
    return int(crf)


def _check_declared_size(width: int, height: int) -> None:
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        raise CodecError(f'declared size {width}x{height} is outside 1..{MAX_SIDE}')


def _validated(rgb: np.ndarray) -> np.ndarray:
    """validate_rgb, reported as CodecError so callers of this module catch one type."""
    try:
        return np.ascontiguousarray(validate_rgb(rgb))
    except ImageError as err:
        raise CodecError(f'cannot encode: {err}') from None


# --------------------------------------------------------------------------------------------
# JPEG


def encode_jpeg(rgb: np.ndarray, quality: int = 80) -> bytes:
    """Encode an RGB uint8 image as baseline JPEG with 4:2:0 chroma at `quality` (1..100)."""
    quality = check_jpeg_quality(quality)
    rgb = _validated(rgb)
    if simplejpeg is not None:
        return simplejpeg.encode_jpeg(rgb, quality=quality, colorspace='RGB',
                                      colorsubsampling='420')
    ok, buf = cv2.imencode('.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise CodecError('cv2.imencode failed')
    return buf.tobytes()


def jpeg_size(data: bytes) -> Tuple[int, int]:
    """Return (width, height) from a JPEG header without decoding; CodecError if unreadable."""
    if simplejpeg is None:
        height, width = decode_jpeg(data).shape[:2]
        return width, height
    try:
        height, width = simplejpeg.decode_jpeg_header(data)[:2]
    except (ValueError, TypeError, KeyError) as err:
        # KeyError: simplejpeg looks the chroma subsampling up in a table, so sampling factors
        # it has no name for (e.g. 4x1 luma) end there instead of in a ValueError.
        raise CodecError(f'not a readable JPEG: {type(err).__name__} {err}') from None
    return int(width), int(height)


def decode_jpeg(data: bytes) -> np.ndarray:
    """Decode JPEG bytes to an RGB uint8 image; CodecError if the payload is not a JPEG."""
    if not data:
        raise CodecError('empty JPEG payload')
    if simplejpeg is not None:
        try:
            return simplejpeg.decode_jpeg(data, colorspace='RGB')
        except (ValueError, TypeError) as err:
            raise CodecError(f'JPEG decode failed: {err}') from None
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise CodecError('JPEG decode failed (cv2.imdecode)')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


# --------------------------------------------------------------------------------------------
# H.264


def nal_unit_types(data: bytes) -> List[int]:
    """nal_unit_type of every NAL unit in an Annex-B buffer (start codes 00 00 01)."""
    types = []
    pos = data.find(b'\x00\x00\x01')
    while 0 <= pos < len(data) - 3:
        types.append(data[pos + 3] & 0x1F)
        pos = data.find(b'\x00\x00\x01', pos + 3)
    return types


def _pad_even(rgb: np.ndarray) -> np.ndarray:
    """Replicate the last row/column so both sides are even (4:2:0 needs 2x2 chroma blocks)."""
    height, width = rgb.shape[:2]
    pad_h, pad_w = height & 1, width & 1
    if not (pad_h or pad_w):
        return rgb
    return cv2.copyMakeBorder(rgb, 0, pad_h, 0, pad_w, cv2.BORDER_REPLICATE)


class H264Encoder:
    """Low-latency libx264 encoder: one Annex-B access unit per encode() call.

    `threads` defaults to 1: on a robot the encoder shares a small CPU with everything else, and
    at uplink resolutions (<= 480x360) one thread is already a few milliseconds.
    """

    def __init__(self, crf: int = 28, preset: str = DEFAULT_X264_PRESET,
                 threads: int = 1) -> None:
        """Configure the encoder; it opens lazily on the first frame (whose size it takes)."""
        self.crf = check_crf(crf)
        check_x264_preset(preset)
        if threads < 0:
            raise ValueError(f'threads must be >= 0 (0 = auto), got {threads}')
        self.preset = preset
        self.threads = int(threads)
        self._ctx: Optional[av.CodecContext] = None
        self._size: Optional[Tuple[int, int]] = None  # (width, height) of the input frames
        self._pts = 0

    @property
    def size(self) -> Optional[Tuple[int, int]]:
        """(width, height) of the open stream, None before the first frame or after reset()."""
        return self._size

    def reset(self) -> None:
        """Close the stream; the next frame opens a new one and is an IDR."""
        self._ctx = None
        self._size = None
        self._pts = 0

    def _open(self, width: int, height: int) -> None:
        ctx = av.CodecContext.create('libx264', 'w')
        ctx.width, ctx.height = width + (width & 1), height + (height & 1)
        ctx.pix_fmt = 'yuv420p'
        ctx.time_base = Fraction(1, 15)  # pts count frames at a nominal 15 fps; CRF without
        ctx.framerate = Fraction(15, 1)  # VBV does not depend on the rate, only on content
        ctx.gop_size = 1 << 30  # ffmpeg's default of 12 would force periodic IDRs
        ctx.max_b_frames = 0
        ctx.thread_count = self.threads
        ctx.options = {'preset': self.preset, 'tune': 'zerolatency', 'crf': str(self.crf),
                       'forced-idr': '1', 'x264-params': _X264_PARAMS}
        ctx.open()
        self._ctx, self._size, self._pts = ctx, (width, height), 0

    def encode(self, rgb: np.ndarray, force_keyframe: bool = False) -> Tuple[bytes, bool]:
        """Encode one RGB frame; return (Annex-B bytes of exactly this frame, is_keyframe).

        A new input size restarts the stream (the first frame of a stream is always an IDR).
        """
        rgb = _validated(rgb)
        height, width = rgb.shape[:2]
        first = self._ctx is None or self._size != (width, height)
        if first:
            self._open(width, height)
        yuv = cv2.cvtColor(_pad_even(rgb), cv2.COLOR_RGB2YUV_I420)
        frame = av.VideoFrame.from_ndarray(yuv, format='yuv420p')
        frame.pts = self._pts
        self._pts += 1
        if force_keyframe or first:
            frame.pict_type = av.video.frame.PictureType.I
        try:
            packets = self._ctx.encode(frame)
        except av.error.FFmpegError as err:
            self.reset()
            raise CodecError(f'x264 encode failed: {err}') from None
        if not packets:  # impossible with zerolatency/no B-frames; would mean a delayed frame
            self.reset()
            raise CodecError('x264 returned no packet for the frame (encoder delay?)')
        data = b''.join(bytes(packet) for packet in packets)
        return data, any(packet.is_keyframe for packet in packets)


class H264Decoder:
    """Decoder for one H.264 stream of Annex-B access units, one frame per decode() call.

    Until it has decoded an IDR (at start, and again after any error) it refuses other frames
    with CodecError instead of returning concealment garbage: `needs_keyframe` tells the caller
    to ask the robot for a KEY.
    """

    def __init__(self, max_pixels: int = MAX_SIDE * MAX_SIDE) -> None:
        """Create a decoder waiting for its first IDR.

        `max_pixels` bounds the picture size FFmpeg accepts from an SPS, so a stream that
        announces a huge picture fails before the decoder allocates its frame buffers.
        """
        self._ctx: Optional[av.CodecContext] = None
        self._needs_keyframe = True
        self.max_pixels = int(max_pixels)

    @property
    def needs_keyframe(self) -> bool:
        """True until an IDR decodes, and again after any decode error."""
        return self._needs_keyframe

    def reset(self) -> None:
        """Drop the decoder state; the next accepted frame must be an IDR."""
        self._ctx = None
        self._needs_keyframe = True

    def _new_context(self) -> av.CodecContext:
        ctx = av.CodecContext.create('h264', 'r')
        ctx.thread_count = 1  # frame threading would delay output by a frame per thread
        ctx.options = {'err_detect': 'explode',  # fail on damaged data instead of concealing
                       'max_pixels': str(self.max_pixels)}
        return ctx

    def decode(self, data: bytes, width: int, height: int) -> np.ndarray:
        """Decode one access unit to RGB uint8, cropped to the declared (width, height)."""
        _check_declared_size(width, height)
        data = bytes(data)
        types = nal_unit_types(data)
        if not types:
            self.reset()
            raise CodecError('no H.264 NAL units in payload')
        is_idr = NAL_IDR in types
        if self._needs_keyframe and not is_idr:
            raise CodecError('decoder has no reference yet: waiting for a keyframe (IDR)')
        if self._ctx is None or (is_idr and self._needs_keyframe):
            self._ctx = self._new_context()
        try:
            frames = self._ctx.decode(av.Packet(data))
        except av.error.FFmpegError as err:
            self.reset()
            raise CodecError(f'H.264 decode failed: {err}') from None
        if len(frames) != 1:
            self.reset()
            raise CodecError(f'expected 1 decoded frame, got {len(frames)}')
        return self._to_rgb(frames[0], width, height)

    def _to_rgb(self, frame: av.VideoFrame, width: int, height: int) -> np.ndarray:
        coded = (width + (width & 1), height + (height & 1))  # encoder pads odd sides
        if (frame.width, frame.height) != coded:
            raise CodecError(f'decoded {frame.width}x{frame.height} does not match declared '
                             f'{width}x{height}')
        rgb = cv2.cvtColor(frame.to_ndarray(format='yuv420p'), cv2.COLOR_YUV2RGB_I420)
        self._needs_keyframe = False  # only an IDR can get here while a keyframe is needed
        if rgb.shape[:2] != (height, width):
            rgb = np.ascontiguousarray(rgb[:height, :width])
        return rgb


# --------------------------------------------------------------------------------------------
# Unified interface used by the nodes


@dataclass(frozen=True)
class EncodedImage:
    """One encoded frame; width/height are the original (unpadded) image size."""

    data: bytes
    keyframe: bool  # always True for JPEG; IDR for H.264
    width: int
    height: int
    codec: str


def _check_codec(codec: str) -> str:
    if codec not in CODECS:
        raise ValueError(f'unknown codec {codec!r}; one of {CODECS}')
    return codec


class FrameEncoder:
    """Encode frames with the configured codec; settings can change between frames."""

    def __init__(self, codec: str = 'jpeg', jpeg_quality: int = 80, h264_crf: int = 28,
                 h264_preset: str = DEFAULT_X264_PRESET, h264_threads: int = 1) -> None:
        """Validate the settings (ValueError if bad); the H.264 stream opens on first use."""
        self.codec = _check_codec(codec)
        self.jpeg_quality = check_jpeg_quality(jpeg_quality)
        self.h264_crf = check_crf(h264_crf)
        self._h264 = H264Encoder(self.h264_crf, h264_preset, h264_threads)

    @property
    def h264_preset(self) -> str:
        """The x264 preset of the H.264 stream."""
        return self._h264.preset

    def reconfigure(self, codec: Optional[str] = None, jpeg_quality: Optional[int] = None,
                    h264_crf: Optional[int] = None, h264_preset: Optional[str] = None) -> None:
        """Change settings atomically (all validated first; ValueError keeps the old ones).

        Switching codec, CRF or preset restarts the H.264 stream, so its next frame is an IDR:
        PyAV cannot retune a running x264, and a decoder needs an IDR after a codec switch.
        """
        new_codec = self.codec if codec is None else _check_codec(codec)
        new_q = self.jpeg_quality if jpeg_quality is None else check_jpeg_quality(jpeg_quality)
        new_crf = self.h264_crf if h264_crf is None else check_crf(h264_crf)
        new_preset = self._h264.preset if h264_preset is None else check_x264_preset(h264_preset)
        if (new_codec, new_crf, new_preset) != (self.codec, self.h264_crf, self._h264.preset):
            self._h264 = H264Encoder(new_crf, new_preset, self._h264.threads)
        self.codec, self.jpeg_quality, self.h264_crf = new_codec, new_q, new_crf

    def encode(self, rgb: np.ndarray, force_keyframe: bool = False) -> EncodedImage:
        """Encode one RGB frame; `force_keyframe` makes an H.264 IDR (JPEG is always key)."""
        rgb = _validated(rgb)
        height, width = rgb.shape[:2]
        if self.codec == 'jpeg':
            return EncodedImage(encode_jpeg(rgb, self.jpeg_quality), True, width, height,
                                'jpeg')
        data, keyframe = self._h264.encode(rgb, force_keyframe)
        return EncodedImage(data, keyframe, width, height, 'h264')


class FrameDecoder:
    """Decode the frames of one stream (keep one per robot: H.264 state is per stream)."""

    def __init__(self, max_pixels: int = MAX_SIDE * MAX_SIDE) -> None:
        """Create a decoder; the H.264 part waits for an IDR and refuses > `max_pixels`."""
        self._h264 = H264Decoder(max_pixels)

    @property
    def needs_keyframe(self) -> bool:
        """True while H.264 frames cannot be decoded until the next IDR."""
        return self._h264.needs_keyframe

    def decode(self, codec: str, data: bytes, width: int, height: int) -> np.ndarray:
        """Decode a payload to RGB uint8 of exactly (height, width, 3).

        Raises CodecError for an unknown codec, an undecodable payload, or a payload whose
        decoded size differs from the declared one (a JPEG is checked from its header first).
        """
        data = bytes(data)  # rclpy gives uint8[] fields as array.array
        if codec == 'h264':
            return self._h264.decode(data, width, height)
        if codec != 'jpeg':
            raise CodecError(f"unknown codec '{printable(codec)}'; one of {CODECS}")
        _check_declared_size(width, height)
        actual_w, actual_h = jpeg_size(data)
        if (actual_w, actual_h) != (width, height):
            raise CodecError(f'JPEG is {actual_w}x{actual_h}, declared {width}x{height}')
        return decode_jpeg(data)
