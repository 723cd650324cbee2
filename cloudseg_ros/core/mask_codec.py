"""PNG coding of class-id masks for the downlink (lossless: class ids must survive exactly)."""
import cv2
import numpy as np

# image_transport's compressed format string for a mono8 image sent as PNG.
PNG_MONO8_FORMAT = 'mono8; png compressed '


def encode_mask_png(mask: np.ndarray, level: int = 1) -> bytes:
    """uint8 (H, W) class ids -> PNG bytes; level 1 is fast and masks compress well anyway."""
    if mask.dtype != np.uint8 or mask.ndim != 2 or mask.size == 0:
        raise ValueError(f'mask must be non-empty uint8 (H, W), got {mask.dtype} {mask.shape}')
    ok, buf = cv2.imencode('.png', mask, [cv2.IMWRITE_PNG_COMPRESSION, level])
    if not ok:
        raise ValueError('PNG encoding failed')
    return buf.tobytes()


# Largest mask decoded (8192x8192 class ids, 64 MiB): the size is read from the PNG header
# first, so a peer's message declaring more allocates nothing.
MAX_MASK_PIXELS = 8192 * 8192


def decode_mask_png(data: bytes, max_pixels: int = MAX_MASK_PIXELS) -> np.ndarray:
    """PNG bytes -> uint8 (H, W) class ids; ValueError if not a single-channel PNG or if its
    header declares more than `max_pixels`."""
    data = bytes(data)
    if data[:8] != b'\x89PNG\r\n\x1a\n' or len(data) < 24 or data[12:16] != b'IHDR':
        raise ValueError('payload is not a PNG')
    width, height = int.from_bytes(data[16:20], 'big'), int.from_bytes(data[20:24], 'big')
    if not 0 < width * height <= max_pixels:
        raise ValueError(f'mask PNG {width}x{height} is empty or exceeds {max_pixels} pixels')
    mask = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if mask is None or mask.ndim != 2 or mask.dtype != np.uint8:
        raise ValueError('payload is not an 8-bit single-channel PNG')
    return mask
