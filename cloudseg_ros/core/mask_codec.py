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


def decode_mask_png(data: bytes) -> np.ndarray:
    """PNG bytes -> uint8 (H, W) class ids; ValueError if not a single-channel PNG."""
    mask = cv2.imdecode(np.frombuffer(bytes(data), np.uint8), cv2.IMREAD_UNCHANGED)
    if mask is None or mask.ndim != 2 or mask.dtype != np.uint8:
        raise ValueError('payload is not an 8-bit single-channel PNG')
    return mask
