"""Camera pixel formats (sensor_msgs/Image encodings, compressed images) to RGB, with OpenCV.

Robots' cameras publish many formats; the pipeline works on uint8 RGB ``(H, W, 3)``. This is
the conversion cv_bridge would do, without ROS (numpy and OpenCV only), so it also runs where
cv_bridge is missing (the PyPI wheels). 16-bit images are scaled to 8 bits (the high byte), as
a display would show them; Bayer mosaics are demosaiced bilinearly; YUV 4:2:2 is BT.601.
"""
from typing import Callable, Dict, Tuple

import cv2
import numpy as np

from cloudseg_ros.core.codecs import CodecError, decode_jpeg, jpeg_size
from cloudseg_ros.core.imageops import ImageError
from cloudseg_ros.core.peer_input import printable

# ROS names the Bayer pattern by its first row, OpenCV by the second: ROS rggb is OpenCV's BG.
_BAYER = {'rggb': cv2.COLOR_BayerBG2RGB, 'bggr': cv2.COLOR_BayerRG2RGB,
          'gbrg': cv2.COLOR_BayerGR2RGB, 'grbg': cv2.COLOR_BayerGB2RGB}


def _to_8bit(pixels: np.ndarray) -> np.ndarray:
    """uint16 -> uint8 by the high byte (the full 16-bit range maps onto 0..255)."""
    return (pixels >> 8).astype(np.uint8)


def _channels(order: Tuple[int, ...]) -> Callable[[np.ndarray], np.ndarray]:
    return lambda pixels: pixels[:, :, list(order)]


def _mono(pixels: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(pixels[:, :, 0], cv2.COLOR_GRAY2RGB)


def _cvt(code: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda pixels: cv2.cvtColor(pixels, code)


def _bayer(code: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda pixels: cv2.cvtColor(np.ascontiguousarray(pixels[:, :, 0]), code)


# encoding -> (bytes per pixel, bits per sample, samples per pixel, samples -> RGB uint8)
# yuv422_yuy2 and yuv422 (UYVY) carry 2 bytes per pixel: one luma and every other chroma.
FORMATS: Dict[str, Tuple[int, int, int, Callable[[np.ndarray], np.ndarray]]] = {
    'rgb8': (3, 8, 3, lambda pixels: pixels),
    'bgr8': (3, 8, 3, _channels((2, 1, 0))),
    'rgba8': (4, 8, 4, _channels((0, 1, 2))),
    'bgra8': (4, 8, 4, _channels((2, 1, 0))),
    'mono8': (1, 8, 1, _mono),
    'mono16': (2, 16, 1, _mono),
    'yuv422_yuy2': (2, 8, 2, _cvt(cv2.COLOR_YUV2RGB_YUY2)),
    'yuv422': (2, 8, 2, _cvt(cv2.COLOR_YUV2RGB_UYVY)),
}
FORMATS.update({f'bayer_{p}8': (1, 8, 1, _bayer(code)) for p, code in _BAYER.items()})
FORMATS.update({f'bayer_{p}16': (2, 16, 1, _bayer(code)) for p, code in _BAYER.items()})
SUPPORTED_ENCODINGS = tuple(FORMATS)
MAX_BYTES_PER_PIXEL = max(spec[0] for spec in FORMATS.values())


def bytes_per_pixel(encoding: str) -> int:
    """Bytes one pixel takes in `encoding`; ImageError naming the supported ones if unknown."""
    if encoding not in FORMATS:
        raise ImageError(f"unsupported encoding '{printable(encoding)}' "
                         f"(supported: {', '.join(SUPPORTED_ENCODINGS)})")
    return FORMATS[encoding][0]


def rows_to_rgb(rows: np.ndarray, width: int, encoding: str,
                big_endian: bool = False) -> np.ndarray:
    """Convert uint8 rows ``(H, >= width * bytes_per_pixel)`` of `encoding` to RGB (H, W, 3).

    Row padding (a step longer than the pixels) is ignored; `big_endian` applies to 16-bit
    encodings. Odd widths of YUV 4:2:2 (two pixels share their chroma) and images smaller than
    2x2 of Bayer mosaics are refused with ImageError.
    """
    bytes_per_pixel(encoding)  # refuses unknown encodings
    nbytes, bits, samples, convert = FORMATS[encoding]
    if samples == 2 and width % 2:
        raise ImageError(f'{encoding} needs an even width, got {width}')
    if encoding.startswith('bayer_') and (width < 2 or rows.shape[0] < 2):
        raise ImageError(f'{encoding} needs at least 2x2 pixels, got {width}x{rows.shape[0]}')
    pixels = rows[:, :width * nbytes]
    if bits == 16:
        dtype = np.dtype('>u2' if big_endian else '<u2')
        pixels = _to_8bit(np.ascontiguousarray(pixels).view(dtype).astype(np.uint16))
    pixels = np.ascontiguousarray(pixels).reshape(rows.shape[0], width, samples)
    return np.ascontiguousarray(convert(pixels))


def compressed_size(data: bytes) -> Tuple[str, int, int]:
    """(kind 'jpeg' | 'png', width, height) read from the header, before any decoding."""
    if data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) >= 24 and data[12:16] == b'IHDR':
        return 'png', int.from_bytes(data[16:20], 'big'), int.from_bytes(data[20:24], 'big')
    if data[:2] == b'\xff\xd8':
        try:
            width, height = jpeg_size(data)
        except CodecError as err:
            raise ImageError(str(err)) from None
        return 'jpeg', width, height
    raise ImageError('compressed image is neither JPEG nor PNG (by its first bytes)')


def decode_compressed(data: bytes, max_pixels: int) -> np.ndarray:
    """Decode a JPEG or PNG image (image_transport's compressed) to RGB uint8 (H, W, 3).

    The size is read from the header first, so an image over `max_pixels` is refused before
    any allocation. 16-bit PNGs are scaled to 8 bits, grey and alpha images made RGB.
    """
    kind, width, height = compressed_size(data)
    if width <= 0 or height <= 0 or width * height > max_pixels:
        raise ImageError(f'compressed image {width}x{height} is empty or exceeds the '
                         f'{max_pixels} pixel limit')
    if kind == 'jpeg':
        try:
            return decode_jpeg(data)
        except CodecError as err:
            raise ImageError(str(err)) from None
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageError('PNG decode failed')
    if image.dtype == np.uint16:
        image = _to_8bit(image)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    code = cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_BGR2RGB
    return cv2.cvtColor(image, code)
