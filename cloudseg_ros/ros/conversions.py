"""Conversions between ROS messages and numpy arrays (our own cv_bridge: none on PyPI).

Everything here raises `ImageError` with a reason a user can act on; nodes log it throttled
and keep running.
"""
from typing import Optional

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from cloudseg_ros.core.imageops import ImageError, validate_rgb
from cloudseg_ros.core.peer_input import printable

# encoding -> (channels, index order that turns the pixel into RGB, or None for mono)
_ENCODINGS = {
    'rgb8': (3, None),
    'bgr8': (3, [2, 1, 0]),
    'rgba8': (4, [0, 1, 2]),
    'bgra8': (4, [2, 1, 0]),
    'mono8': (1, None),
}
SUPPORTED_ENCODINGS = tuple(_ENCODINGS)
MAX_BYTES_PER_PIXEL = max(channels for channels, _ in _ENCODINGS.values())


def image_msg_to_rgb(msg: Image, max_side: int = 8192,
                     max_pixels: int = 8192 * 8192) -> np.ndarray:
    """Return the image as a contiguous uint8 (H, W, 3) RGB array; mono8 is replicated.

    Images over `max_side` or `max_pixels` (width x height), and messages holding more data than
    a `max_pixels` image of the widest encoding could, are refused before anything is copied.
    """
    if msg.encoding not in _ENCODINGS:
        raise ImageError(f"unsupported encoding '{printable(msg.encoding)}' "
                         f"(supported: {', '.join(SUPPORTED_ENCODINGS)})")
    if msg.width == 0 or msg.height == 0:
        raise ImageError(f'empty image {msg.width}x{msg.height}')
    if max(msg.width, msg.height) > max_side:
        raise ImageError(f'image {msg.width}x{msg.height} exceeds the {max_side} px limit')
    if msg.width * msg.height > max_pixels:
        raise ImageError(f'image {msg.width}x{msg.height} exceeds the {max_pixels} pixel limit')
    if len(msg.data) > max_pixels * MAX_BYTES_PER_PIXEL:
        raise ImageError(f'{len(msg.data)} data bytes exceed what a {max_pixels} pixel image '
                         f'holds ({max_pixels * MAX_BYTES_PER_PIXEL})')
    channels, order = _ENCODINGS[msg.encoding]
    row_bytes = msg.width * channels
    if msg.step < row_bytes or len(msg.data) < msg.step * msg.height:
        raise ImageError(f'{msg.encoding} image {msg.width}x{msg.height}: step {msg.step} and '
                         f'{len(msg.data)} data bytes do not hold {row_bytes} bytes x '
                         f'{msg.height} rows')
    buf = np.frombuffer(msg.data, dtype=np.uint8, count=msg.step * msg.height)
    pixels = buf.reshape(msg.height, msg.step)[:, :row_bytes]
    pixels = pixels.reshape(msg.height, msg.width, channels)
    if channels == 1:
        return np.ascontiguousarray(np.repeat(pixels, 3, axis=2))
    if order is not None:
        pixels = pixels[:, :, order]
    return np.ascontiguousarray(pixels)


def rgb_to_image_msg(rgb: np.ndarray, header: Header) -> Image:
    """Build an rgb8 `sensor_msgs/Image` (the header is copied, keeping the stamp)."""
    validate_rgb(rgb)
    msg = Image(header=header, height=rgb.shape[0], width=rgb.shape[1], encoding='rgb8',
                is_bigendian=0, step=rgb.shape[1] * 3)
    msg.data = np.ascontiguousarray(rgb).tobytes()
    return msg


def mask_to_image_msg(mask: np.ndarray, header: Header) -> Image:
    """Build a mono8 `sensor_msgs/Image` of class ids."""
    if mask.dtype != np.uint8 or mask.ndim != 2 or mask.size == 0:
        raise ImageError(f'mask must be non-empty uint8 (H, W), got {mask.dtype} {mask.shape}')
    msg = Image(header=header, height=mask.shape[0], width=mask.shape[1], encoding='mono8',
                is_bigendian=0, step=mask.shape[1])
    msg.data = np.ascontiguousarray(mask).tobytes()
    return msg


def compressed_msg(header: Header, fmt: str, data: bytes) -> CompressedImage:
    """Build a `sensor_msgs/CompressedImage`; `fmt` is 'jpeg' or 'png' as image_transport uses."""
    msg = CompressedImage(header=header, format=fmt)
    msg.data = bytes(data)
    return msg


def stamp_to_s(stamp: Time) -> float:
    """ROS time stamp -> seconds as float."""
    return stamp.sec + stamp.nanosec * 1e-9


def s_to_stamp(t_s: float) -> Time:
    """Seconds -> ROS time stamp."""
    sec = int(t_s)
    return Time(sec=sec, nanosec=int(round((t_s - sec) * 1e9)) % 1_000_000_000)


def copy_header(header: Header, frame_id: Optional[str] = None) -> Header:
    """Copy the stamp (acquisition time) and, unless overridden, frame id into a new Header."""
    return Header(stamp=Time(sec=header.stamp.sec, nanosec=header.stamp.nanosec),
                  frame_id=header.frame_id if frame_id is None else frame_id)
