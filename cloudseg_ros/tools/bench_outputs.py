"""`cloudseg bench-outputs`: CPU cost per frame of the cloud's outputs (what lazy publishing
skips when nobody subscribes): the rgb8 overlay message, the PNG, the mono8 mask message;
and what filling a message's uint8[] field costs where rclpy checks fields (always on Humble):
`bytes` (checked element by element) against `conversions.uint8_field`'s array.array.

Uses the node's own functions on a synthetic mask and LR frame at --size (default 2048x1024,
the fleet target) and prints process CPU ms per frame.
"""
import argparse
import time
from typing import Callable, List, Optional, Tuple

import numpy as np
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from cloudseg_ros.core.imageops import upsample_bilinear
from cloudseg_ros.core.mask_codec import encode_mask_png
from cloudseg_ros.core.palette import CAMVID_PALETTE, overlay
from cloudseg_ros.ros.conversions import mask_to_image_msg, rgb_to_image_msg, uint8_field


def cpu_ms(fn: Callable[[], object], iters: int) -> float:
    """Process CPU milliseconds per call of `fn` (after one untimed call)."""
    fn()
    start = time.process_time()
    for _ in range(iters):
        fn()
    return (time.process_time() - start) / iters * 1e3


def checked_image() -> Image:
    """An Image whose setters check their values, as every message does on Humble."""
    try:
        return Image(check_fields=True)  # Jazzy and newer: checks are off by default
    except (TypeError, AssertionError):  # Humble: no such argument, checks always on
        return Image()


def fill_ms(mask: np.ndarray, iters: int) -> Tuple[float, float]:
    """CPU ms to set a checked message's data from `bytes`, and via `uint8_field`."""
    msg = checked_image()

    def set_bytes():
        msg.data = mask.tobytes()

    def set_array():
        msg.data = uint8_field(mask)
    return cpu_ms(set_bytes, max(1, iters // 4)), cpu_ms(set_array, iters)


def main(argv: Optional[List[str]] = None) -> int:
    """Print the CPU cost of each output at one size."""
    parser = argparse.ArgumentParser(prog='cloudseg bench-outputs', description=__doc__)
    parser.add_argument('--size', default='2048x1024', help='mask size WxH')
    parser.add_argument('--scale', type=int, default=4, help='LR frame = size / scale')
    parser.add_argument('--iters', type=int, default=20)
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split('x'))
    rng = np.random.default_rng(0)
    # Blocky class regions, like a real mask (PNG cost depends on it).
    mask = rng.integers(0, 11, (height // 16 + 1, width // 16 + 1), dtype=np.uint8)
    mask = np.ascontiguousarray(mask.repeat(16, 0).repeat(16, 1)[:height, :width])
    lr = rng.integers(0, 256, (height // args.scale, width // args.scale, 3), dtype=np.uint8)
    color = cpu_ms(lambda: rgb_to_image_msg(overlay(upsample_bilinear(lr, (width, height)),
                                                    mask, CAMVID_PALETTE, 0.5, 11), Header()),
                   args.iters)
    png = cpu_ms(lambda: encode_mask_png(mask), args.iters)
    mono = cpu_ms(lambda: mask_to_image_msg(mask, Header()), args.iters)
    print(f'{width}x{height}, CPU ms per frame: mask_color {color:.1f}, mask/compressed (PNG) '
          f'{png:.1f}, mask (mono8 message) {mono:.2f}')
    print(f'every output built (before): {color + png + mono:.1f} ms/frame; only the '
          f'subscribed mask (after): {mono:.2f} ms/frame')
    as_bytes, as_array = fill_ms(mask, args.iters)
    print(f'mask data into a field-checked message (Humble): bytes {as_bytes:.1f} ms, '
          f'array.array (uint8_field) {as_array:.2f} ms')
    return 0
