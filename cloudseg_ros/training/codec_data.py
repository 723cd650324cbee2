"""Training inputs that went through the real uplink: downsample, JPEG or H.264, decode.

SR must learn to undo what the robot actually sends, not a clean area-downsampled frame, and the
segmentation net must not flip classes when a frame is compressed or resampled. Both need frames
that crossed the robot's codec and the cloud's decoder (`core.codecs`, the same functions the
edge and cloud nodes call). Encoding is CPU work, so it is done once per run, before training,
into uint8 stacks that then live on the accelerator:

- `build_lr_variants`: for each HR frame, `variants` decoded LR copies at one scale (`core`
  INTER_AREA downsample, then JPEG at a random quality or H.264 at a random CRF).
- `build_degraded_views`: for each HR frame, full-size degraded copies for segmentation
  (downsample x1..x4 with a random interpolator, codec round trip, resize back with a random
  interpolator), pixel-aligned with the labels.

H.264 frames are encoded as short groups of consecutive frames (an IDR then P-frames), as the
robot streams them, so both intra and inter artefacts appear, with the robot's x264 preset
(`h264_preset`, default the edge's `veryfast`; the shipped nets were trained on `ultrafast`).
Random choices come from one seeded `numpy.random.Generator`; work runs in threads (OpenCV and
libav release the GIL).
"""
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
import os
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from cloudseg_ros.core.codecs import (EDGE_DEFAULT_X264_PRESET, H264Decoder, H264Encoder,
                                      check_x264_preset, decode_jpeg, encode_jpeg)
from cloudseg_ros.core.imageops import downsample

from .config import ConfigError

CODECS = ('jpeg', 'h264')
# (name, cv2 flag) of the interpolators a degraded view may be resized with; the robot itself
# always uses INTER_AREA, other cameras and drivers do not.
DOWN_FILTERS = (('area', cv2.INTER_AREA), ('linear', cv2.INTER_LINEAR),
                ('cubic', cv2.INTER_CUBIC), ('nearest', cv2.INTER_NEAREST))
UP_FILTERS = (('linear', cv2.INTER_LINEAR), ('cubic', cv2.INTER_CUBIC),
              ('nearest', cv2.INTER_NEAREST), ('lanczos', cv2.INTER_LANCZOS4))


@dataclass(frozen=True)
class CodecRange:
    """Which codecs a degraded frame may use and the quality ranges drawn from (inclusive)."""

    codecs: Tuple[str, ...] = CODECS
    jpeg_quality: Tuple[int, int] = (30, 95)
    h264_crf: Tuple[int, int] = (18, 38)
    gop: int = 6  # H.264 frames per group (IDR + P-frames); one CRF per group
    h264_preset: str = EDGE_DEFAULT_X264_PRESET  # what the robot encodes with

    def __post_init__(self) -> None:
        unknown = set(self.codecs) - set(CODECS)
        if not self.codecs or unknown:
            raise ValueError(f'codecs must be a non-empty subset of {CODECS}, got {self.codecs}')
        for name, (low, high), bound in (('jpeg_quality', self.jpeg_quality, (1, 100)),
                                         ('h264_crf', self.h264_crf, (0, 51))):
            if not bound[0] <= low <= high <= bound[1]:
                raise ValueError(f'{name} range must lie in {bound}, got ({low}, {high})')
        if self.gop < 1:
            raise ValueError(f'gop must be >= 1, got {self.gop}')
        check_x264_preset(self.h264_preset)


def codec_range_of(cfg: object) -> CodecRange:
    """The CodecRange of a train config with `codecs`, `jpeg_quality_*`, `h264_crf_*` and
    `h264_preset` keys; ConfigError names a bad one."""
    try:
        return CodecRange(tuple(cfg.codecs), (cfg.jpeg_quality_min, cfg.jpeg_quality_max),
                          (cfg.h264_crf_min, cfg.h264_crf_max), h264_preset=cfg.h264_preset)
    except ValueError as err:
        raise ConfigError(str(err)) from err


def jpeg_round_trip(rgb: np.ndarray, quality: int) -> np.ndarray:
    """What the cloud decodes after the robot sent `rgb` as JPEG at `quality`."""
    return decode_jpeg(encode_jpeg(rgb, int(quality)))


def h264_round_trip(frames: Sequence[np.ndarray], crf: int,
                    preset: str = EDGE_DEFAULT_X264_PRESET) -> List[np.ndarray]:
    """Encode equally sized frames as one H.264 stream (IDR first) and decode it back."""
    encoder, decoder = H264Encoder(int(crf), preset), H264Decoder()
    out = []
    for rgb in frames:
        data, _ = encoder.encode(rgb)
        out.append(decoder.decode(data, rgb.shape[1], rgb.shape[0]))
    return out


def _groups(count: int, gop: int) -> List[range]:
    return [range(i, min(count, i + gop)) for i in range(0, count, gop)]


def _codec_jobs(count: int, codec_range: CodecRange, rng: np.random.Generator
                ) -> List[Tuple[str, int, range]]:
    """(codec, quality or CRF, frame indices) jobs covering frames 0..count-1 once."""
    jobs = []
    for group in _groups(count, codec_range.gop):
        codec = codec_range.codecs[int(rng.integers(len(codec_range.codecs)))]
        if codec == 'h264':
            jobs.append((codec, int(rng.integers(codec_range.h264_crf[0],
                                                 codec_range.h264_crf[1] + 1)), group))
        else:  # JPEG is per frame: a quality each
            for i in group:
                jobs.append((codec, int(rng.integers(codec_range.jpeg_quality[0],
                                                     codec_range.jpeg_quality[1] + 1)),
                             range(i, i + 1)))
    return jobs


def codec_round_trip(frames: Sequence[np.ndarray], codec_range: CodecRange,
                     rng: np.random.Generator, workers: int = 8
                     ) -> Tuple[List[np.ndarray], List[Tuple[str, int]]]:
    """Decoded copies of `frames` (in order) and the (codec, quality/CRF) each went through."""
    jobs = _codec_jobs(len(frames), codec_range, rng)

    def run(job: Tuple[str, int, range]) -> List[np.ndarray]:
        codec, value, indices = job
        chunk = [frames[i] for i in indices]
        if codec == 'h264':
            return h264_round_trip(chunk, value, codec_range.h264_preset)
        return [jpeg_round_trip(chunk[0], value)]

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        decoded = list(pool.map(run, jobs))
    out: List[np.ndarray] = []
    settings: List[Tuple[str, int]] = []
    for (codec, value, indices), images in zip(jobs, decoded):
        out += images
        settings += [(codec, value)] * len(indices)
    return out, settings


def crop_to_scale(frames: np.ndarray, scale: int) -> np.ndarray:
    """Crop `(N, H, W, 3)` so H and W are multiples of `scale` (LR pixels map to HR blocks)."""
    h, w = frames.shape[1:3]
    return frames[:, :h - h % scale, :w - w % scale]


def build_lr_variants(hr: np.ndarray, scale: int, variants: int, codec_range: CodecRange,
                      seed: int = 0, workers: int = 8) -> np.ndarray:
    """Decoded LR copies `(N, V, H/s, W/s, 3)` of uint8 HR frames `(N, H, W, 3)`.

    HR must have sides divisible by `scale` (`crop_to_scale`). Variant v of every frame went
    through its own random codec setting, so a training batch mixes qualities and codecs.
    """
    if hr.shape[1] % scale or hr.shape[2] % scale:
        raise ValueError(f'HR size {hr.shape[2]}x{hr.shape[1]} is not divisible by x{scale}')
    rng = np.random.default_rng(seed)
    lr_clean = [downsample(frame, scale) for frame in hr]
    out = np.empty((len(hr), variants) + lr_clean[0].shape, np.uint8)
    for v in range(variants):
        decoded, _ = codec_round_trip(lr_clean, codec_range, rng, workers)
        out[:, v] = np.stack(decoded)
    return out


def _resize(rgb: np.ndarray, size_wh: Tuple[int, int], flag: int) -> np.ndarray:
    return cv2.resize(rgb, size_wh, interpolation=flag)


def build_degraded_views(hr: np.ndarray, variants: int, codec_range: CodecRange,
                         scales: Sequence[int] = (1, 2, 3, 4),
                         scale_probs: Optional[Sequence[float]] = None,
                         seed: int = 0, workers: int = 8) -> np.ndarray:
    """Full-size degraded copies `(N, V, H, W, 3)` of uint8 frames `(N, H, W, 3)`.

    Per frame and variant: a scale from `scales` (weights `scale_probs`), a random down filter
    (scale > 1), a codec round trip at that size, and a random filter back to H x W, so the
    copy stays aligned with the frame's labels.
    """
    rng = np.random.default_rng(seed)
    n, h, w = hr.shape[:3]
    probs = None if scale_probs is None else np.asarray(scale_probs, float) / np.sum(scale_probs)
    out = np.empty((n, variants, h, w, 3), np.uint8)
    for v in range(variants):
        chosen = rng.choice(list(scales), size=n, p=probs)
        for scale in sorted(set(int(s) for s in chosen)):
            idx = np.flatnonzero(chosen == scale)
            small = [_down(hr[i], scale, rng) for i in idx]
            decoded, _ = codec_round_trip(small, codec_range, rng, workers)
            for i, img in zip(idx, decoded):
                out[i, v] = img if scale == 1 else _resize(
                    img, (w, h), UP_FILTERS[int(rng.integers(len(UP_FILTERS)))][1])
    return out


def _down(rgb: np.ndarray, scale: int, rng: np.random.Generator) -> np.ndarray:
    if scale == 1:
        return rgb
    flag = DOWN_FILTERS[int(rng.integers(len(DOWN_FILTERS)))][1]
    h, w = rgb.shape[:2]
    return _resize(rgb, (max(1, w // scale), max(1, h // scale)), flag)


def cached(path: str, build, label: str) -> np.ndarray:
    """Load `path` (.npy) when it exists, else `build()`, save it there and return it.

    The cache file name must encode everything the data depends on (the caller's job).
    """
    if path and os.path.isfile(path):
        print(f'{label}: cached {path}', flush=True)
        return np.load(path, mmap_mode=None)
    data = build()
    if path:
        os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
        np.save(path + '.tmp.npy', data)
        os.replace(path + '.tmp.npy', path)
    return data
