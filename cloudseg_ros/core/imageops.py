"""Image checks and resizes shared by the robot, the cloud and training (numpy/OpenCV only).

Images are uint8 RGB arrays ``(H, W, 3)``; masks are uint8 class ids ``(H, W)``. Sizes passed to
the resize helpers are ``(width, height)`` like ``cv2.resize``, so they can be forwarded as-is.
"""
from typing import Tuple

import cv2
import numpy as np

MAX_SCALE = 4


class ImageError(ValueError):
    """An image that the pipeline cannot process; the message says why."""


def validate_rgb(img: np.ndarray, max_side: int = 8192) -> np.ndarray:
    """Check that `img` is a usable uint8 RGB image and return it unchanged.

    Raises ImageError naming the first problem found: not an array, dtype other than uint8,
    shape other than (H, W, 3), zero size, or a side longer than `max_side` pixels (protects
    the encoders and the network from absurd allocations caused by a corrupt message).
    """
    if not isinstance(img, np.ndarray):
        raise ImageError(f'expected a numpy array, got {type(img).__name__}')
    if img.dtype != np.uint8:
        raise ImageError(f'expected dtype uint8, got {img.dtype}')
    if img.ndim != 3:
        raise ImageError(f'expected 3 dimensions (H, W, 3), got shape {img.shape}')
    if img.shape[2] != 3:
        raise ImageError(f'expected 3 channels (RGB), got {img.shape[2]}')
    height, width = img.shape[:2]
    if height == 0 or width == 0:
        raise ImageError(f'image has zero size: {width}x{height}')
    if max(height, width) > max_side:
        raise ImageError(f'image {width}x{height} exceeds the maximum side of {max_side} px')
    return img


def _check_size(size_wh: Tuple[int, int]) -> Tuple[int, int]:
    """Return `size_wh` as two positive ints or raise ValueError."""
    try:
        width, height = (int(v) for v in size_wh)
    except (TypeError, ValueError):
        raise ValueError(f'size must be (width, height), got {size_wh!r}') from None
    if width <= 0 or height <= 0:
        raise ValueError(f'size must be positive, got {width}x{height}')
    return width, height


def downsample(rgb: np.ndarray, scale: int) -> np.ndarray:
    """Shrink by an integer factor to (w // scale, h // scale) with area averaging.

    INTER_AREA is the uplink's anti-aliased decimation; the SR networks are trained on pairs
    made by this same function, so robot and training must not diverge. Scale 1 returns the
    input object itself (no copy). Raises ValueError for a scale outside 1..4 or an image too
    small to shrink.
    """
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)):
        raise ValueError(f'scale must be an integer 1..{MAX_SCALE}, got {scale!r}')
    if not 1 <= scale <= MAX_SCALE:
        raise ValueError(f'scale must be 1..{MAX_SCALE}, got {scale}')
    if scale == 1:
        return rgb
    height, width = rgb.shape[:2]
    if width // scale == 0 or height // scale == 0:
        raise ValueError(f'image {width}x{height} too small for scale {scale}')
    return cv2.resize(rgb, (width // scale, height // scale), interpolation=cv2.INTER_AREA)


def upsample_bilinear(img: np.ndarray, size_wh: Tuple[int, int]) -> np.ndarray:
    """Resize to `size_wh` (width, height) with bilinear interpolation (the cheap SR baseline)."""
    return cv2.resize(img, _check_size(size_wh), interpolation=cv2.INTER_LINEAR)


def upsample_bicubic(img: np.ndarray, size_wh: Tuple[int, int]) -> np.ndarray:
    """Resize to `size_wh` (width, height) with bicubic interpolation (the usual SR baseline)."""
    return cv2.resize(img, _check_size(size_wh), interpolation=cv2.INTER_CUBIC)


def resize_mask_nearest(mask: np.ndarray, size_wh: Tuple[int, int]) -> np.ndarray:
    """Resize a class-id mask to `size_wh` (width, height) without inventing new ids.

    Uses INTER_NEAREST_EXACT: plain INTER_NEAREST picks source pixels with a half-pixel offset,
    which shifts masks up-left by up to half a source pixel; the exact variant samples pixel
    centres, so a mask and its image stay aligned at any scale.
    """
    width, height = _check_size(size_wh)
    if mask.ndim != 2:
        raise ValueError(f'mask must be 2-D (H, W), got shape {mask.shape}')
    if mask.shape == (height, width):
        return mask
    return cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)


def thumbnail_gray(rgb: np.ndarray, width: int = 64) -> np.ndarray:
    """Return a small float32 luma thumbnail in [0, 1], `width` wide, aspect kept.

    Area averaging (each thumbnail pixel averages many source pixels) removes most sensor noise
    and compression artefacts, and converting to luma after the resize keeps the cost low.
    OpenCV's INTER_AREA is slow for large non-2x factors (~2 ms for 2048x1024 -> 64x32), so
    large inputs are first shrunk bilinearly to 4x the thumbnail size (each output pixel still
    averages 4x4 samples; 0.15 ms). Luma is BT.601 (cv2 RGB2GRAY), the Y of JPEG and H.264.
    """
    if width <= 0:
        raise ValueError(f'thumbnail width must be positive, got {width}')
    src_h, src_w = rgb.shape[:2]
    height = max(1, int(round(src_h * width / src_w)))
    if src_w > 4 * width and src_h > 4 * height:
        rgb = cv2.resize(rgb, (4 * width, 4 * height), interpolation=cv2.INTER_LINEAR)
    small = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
    gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    return gray.astype(np.float32) * np.float32(1.0 / 255.0)
