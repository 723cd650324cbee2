"""Conversions between ROS messages and numpy arrays (cv_bridge when importable, else ours).

Everything here raises `ImageError` with a reason a user can act on; nodes log it throttled
and keep running.
"""
import array
from typing import Optional

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from cloudseg_ros.core import encodings
from cloudseg_ros.core.imageops import ImageError, validate_rgb
from cloudseg_ros.core.peer_input import printable

SUPPORTED_ENCODINGS = encodings.SUPPORTED_ENCODINGS
MAX_BYTES_PER_PIXEL = encodings.MAX_BYTES_PER_PIXEL


def uint8_field(data) -> array.array:
    """`data` (bytes-like) as the array.array('B') a ROS uint8[] field holds.

    Assigning anything else makes the generated setter check every element in Python where
    field checks are on (always on Humble): 136 ms for a 2048x1024 mask, against 0.05 ms
    this way (`cloudseg bench-outputs`). `frombytes` copies the buffer; the array constructor
    would iterate it.
    """
    field = array.array('B')
    field.frombytes(memoryview(data).cast('B'))
    return field


def _cv_bridge():
    """cv_bridge's CvBridge on a ROS install that has it, else None (the PyPI wheels)."""
    try:
        from cv_bridge import CvBridge, CvBridgeError
    except ImportError:
        return None
    return CvBridge(), CvBridgeError


CV_BRIDGE = _cv_bridge()


def image_msg_to_rgb(msg: Image, max_side: int = 8192,
                     max_pixels: int = 8192 * 8192) -> np.ndarray:
    """Return the image as a contiguous uint8 (H, W, 3) RGB array.

    Encodings: core/encodings.py's (rgb8, bgr8, rgba8, bgra8, mono8, mono16, yuv422_yuy2,
    yuv422, bayer_*8, bayer_*16). Images over `max_side` or `max_pixels` (width x height), and
    messages holding more data than a `max_pixels` image of the widest encoding could, are
    refused before anything is copied. Where cv_bridge is importable it converts the 8-bit
    encodings; 16-bit ones always go through core/encodings.py, which scales them to 8 bits
    (cv_bridge would saturate them).
    """
    bytes_per_pixel = encodings.bytes_per_pixel(msg.encoding)
    if msg.width == 0 or msg.height == 0:
        raise ImageError(f'empty image {msg.width}x{msg.height}')
    if max(msg.width, msg.height) > max_side:
        raise ImageError(f'image {msg.width}x{msg.height} exceeds the {max_side} px limit')
    if msg.width * msg.height > max_pixels:
        raise ImageError(f'image {msg.width}x{msg.height} exceeds the {max_pixels} pixel limit')
    if len(msg.data) > max_pixels * MAX_BYTES_PER_PIXEL:
        raise ImageError(f'{len(msg.data)} data bytes exceed what a {max_pixels} pixel image '
                         f'holds ({max_pixels * MAX_BYTES_PER_PIXEL})')
    row_bytes = msg.width * bytes_per_pixel
    if msg.step < row_bytes or len(msg.data) < msg.step * msg.height:
        raise ImageError(f'{msg.encoding} image {msg.width}x{msg.height}: step {msg.step} and '
                         f'{len(msg.data)} data bytes do not hold {row_bytes} bytes x '
                         f'{msg.height} rows')
    if CV_BRIDGE is not None and '16' not in msg.encoding:
        bridge, bridge_error = CV_BRIDGE
        try:
            return np.ascontiguousarray(bridge.imgmsg_to_cv2(msg, desired_encoding='rgb8'))
        except bridge_error as err:
            raise ImageError(f'cv_bridge: {printable(str(err))}') from None
    buf = np.frombuffer(msg.data, dtype=np.uint8, count=msg.step * msg.height)
    return encodings.rows_to_rgb(buf.reshape(msg.height, msg.step), msg.width, msg.encoding,
                                 bool(msg.is_bigendian))


def compressed_msg_to_rgb(msg: CompressedImage, max_pixels: int = 8192 * 8192,
                          max_bytes: int = 64 << 20) -> np.ndarray:
    """Decode an image_transport compressed image (JPEG or PNG) to uint8 (H, W, 3) RGB.

    Refused before decoding: more than `max_bytes` of data, or a header declaring more than
    `max_pixels`.
    """
    if len(msg.data) > max_bytes:
        raise ImageError(f'{len(msg.data)} bytes of compressed image exceed {max_bytes}')
    return encodings.decode_compressed(bytes(msg.data), max_pixels)


def rgb_to_image_msg(rgb: np.ndarray, header: Header) -> Image:
    """Build an rgb8 `sensor_msgs/Image` (the header is copied, keeping the stamp)."""
    validate_rgb(rgb)
    msg = Image(header=header, height=rgb.shape[0], width=rgb.shape[1], encoding='rgb8',
                is_bigendian=0, step=rgb.shape[1] * 3)
    msg.data = uint8_field(np.ascontiguousarray(rgb))
    return msg


def mask_to_image_msg(mask: np.ndarray, header: Header) -> Image:
    """Build a mono8 `sensor_msgs/Image` of class ids."""
    if mask.dtype != np.uint8 or mask.ndim != 2 or mask.size == 0:
        raise ImageError(f'mask must be non-empty uint8 (H, W), got {mask.dtype} {mask.shape}')
    msg = Image(header=header, height=mask.shape[0], width=mask.shape[1], encoding='mono8',
                is_bigendian=0, step=mask.shape[1])
    msg.data = uint8_field(np.ascontiguousarray(mask))
    return msg


def compressed_msg(header: Header, fmt: str, data: bytes) -> CompressedImage:
    """Build a `sensor_msgs/CompressedImage`; `fmt` is 'jpeg' or 'png' as image_transport uses."""
    msg = CompressedImage(header=header, format=fmt)
    msg.data = uint8_field(data)
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
