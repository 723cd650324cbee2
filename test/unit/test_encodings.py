"""Camera pixel formats and compressed images to RGB (core/encodings.py, ros/conversions.py).

Each encoding is built from a known RGB image the way a camera lays it out (channel order,
16-bit samples in either byte order, YUYV / UYVY 4:2:2, Bayer mosaics of every pattern), sent
as a sensor_msgs/Image with padded rows, and must come back as that RGB image.
"""
import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image

from cloudseg_ros.core.codecs import encode_jpeg
from cloudseg_ros.core.encodings import SUPPORTED_ENCODINGS, decode_compressed
from cloudseg_ros.core.imageops import ImageError
from cloudseg_ros.ros import conversions
from cloudseg_ros.ros.conversions import compressed_msg_to_rgb, image_msg_to_rgb

PAD = 5  # bytes of padding per row: a step longer than the pixels


def _msg(pixels: np.ndarray, encoding: str, big_endian: bool = False) -> Image:
    """An Image of (H, W[, C]) samples with padded rows."""
    height, width = pixels.shape[:2]
    rows = pixels.reshape(height, -1)
    if rows.dtype == np.uint16:
        rows = rows.astype('>u2' if big_endian else '<u2')
    rows = np.ascontiguousarray(rows).view(np.uint8)
    padded = np.zeros((height, rows.shape[1] + PAD), np.uint8)
    padded[:, :rows.shape[1]] = rows
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=int(big_endian),
                step=padded.shape[1])
    msg.data = padded.tobytes()
    return msg


@pytest.fixture
def rgb():
    return np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)


@pytest.mark.parametrize('encoding, order', [('rgb8', [0, 1, 2]), ('bgr8', [2, 1, 0])])
def test_three_channel_encodings_are_exact(rgb, encoding, order):
    assert np.array_equal(image_msg_to_rgb(_msg(rgb[:, :, order], encoding)), rgb)


@pytest.mark.parametrize('encoding, order', [('rgba8', [0, 1, 2]), ('bgra8', [2, 1, 0])])
def test_alpha_is_dropped(rgb, encoding, order):
    alpha = np.full(rgb.shape[:2] + (1,), 17, np.uint8)
    pixels = np.concatenate([rgb[:, :, order], alpha], axis=2)
    assert np.array_equal(image_msg_to_rgb(_msg(pixels, encoding)), rgb)


def test_mono8_is_replicated(rgb):
    gray = rgb[:, :, 0]
    out = image_msg_to_rgb(_msg(gray, 'mono8'))
    assert np.array_equal(out, np.repeat(gray[:, :, None], 3, axis=2))


@pytest.mark.parametrize('big_endian', [False, True])
def test_mono16_keeps_the_high_byte_in_either_byte_order(rgb, big_endian):
    gray = rgb[:, :, 0]
    samples = gray.astype(np.uint16) * 257 + 3  # low byte noise must not matter
    out = image_msg_to_rgb(_msg(samples, 'mono16', big_endian))
    assert np.array_equal(out, np.repeat(gray[:, :, None], 3, axis=2))


def _bt601_limited(rgb):
    """RGB -> Y, U, V (BT.601, limited range), as cameras' YUV 4:2:2 carries them."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
    return [np.clip(np.round(c), 0, 255).astype(np.uint8) for c in (y, u, v)]


@pytest.mark.parametrize('encoding', ['yuv422_yuy2', 'yuv422'])
def test_yuv422_decodes_to_the_camera_colours(rgb, encoding):
    rgb = np.repeat(rgb[:, ::2], 2, axis=1)  # pixel pairs share their chroma in 4:2:2
    y, u, v = _bt601_limited(rgb)
    chroma = np.empty_like(y)
    chroma[:, 0::2], chroma[:, 1::2] = u[:, 0::2], v[:, 0::2]
    # YUYV: Y0 U Y1 V; UYVY: U Y0 V Y1.
    pair = (y, chroma) if encoding == 'yuv422_yuy2' else (chroma, y)
    out = image_msg_to_rgb(_msg(np.stack(pair, axis=2), encoding))
    assert np.abs(out.astype(int) - rgb).max() <= 3


def _mosaic(color, pattern, shape=(6, 8), bits=8):
    """A Bayer mosaic of a uniform colour; `pattern` names the colours of the 2x2 cell."""
    index = {'r': 0, 'g': 1, 'b': 2}
    mosaic = np.zeros(shape, np.uint16 if bits == 16 else np.uint8)
    for k, name in enumerate(pattern):
        value = color[index[name]] * (257 if bits == 16 else 1)
        mosaic[k // 2::2, k % 2::2] = value
    return mosaic


@pytest.mark.parametrize('pattern', ['rggb', 'bggr', 'gbrg', 'grbg'])
@pytest.mark.parametrize('bits', [8, 16])
def test_bayer_patterns_demosaic_to_the_right_colour(pattern, bits):
    color = (200, 90, 20)  # R, G and B all differ: a wrong pattern swaps or mixes them
    out = image_msg_to_rgb(_msg(_mosaic(color, pattern, bits=bits), f'bayer_{pattern}{bits}'))
    assert out.shape == (6, 8, 3)
    assert np.array_equal(out[2:-2, 2:-2], np.broadcast_to(color, (2, 4, 3)))


def test_every_supported_encoding_is_tested():
    tested = {'rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8', 'mono16', 'yuv422_yuy2', 'yuv422'}
    tested |= {f'bayer_{p}{b}' for p in ('rggb', 'bggr', 'gbrg', 'grbg') for b in (8, 16)}
    assert set(SUPPORTED_ENCODINGS) == tested


@pytest.mark.parametrize('msg, reason', [
    (Image(width=4, height=2, encoding='32FC1', step=16, data=bytes(32)), "'32FC1'"),
    (Image(width=3, height=2, encoding='yuv422_yuy2', step=6, data=bytes(12)), 'even width'),
    (Image(width=4, height=2, encoding='mono16', step=8, data=bytes(10)), 'do not hold'),
    (Image(width=4, height=2, encoding='rgb8', step=4, data=bytes(24)), 'do not hold'),
    (Image(width=1, height=1, encoding='bayer_rggb8', step=1, data=bytes(1)), '2x2'),
])
def test_bad_images_are_refused_with_a_reason(msg, reason):
    with pytest.raises(ImageError, match=reason):
        image_msg_to_rgb(msg)


def test_compressed_jpeg_and_png_decode(rgb):
    smooth = cv2.resize(rgb, (64, 48), interpolation=cv2.INTER_LINEAR)  # JPEG is lossy on noise
    jpeg = CompressedImage(format='jpeg')
    jpeg.data = encode_jpeg(smooth, 95)
    assert np.abs(compressed_msg_to_rgb(jpeg).astype(int) - smooth).mean() < 6
    png = CompressedImage(format='png')
    png.data = cv2.imencode('.png', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()
    assert np.array_equal(compressed_msg_to_rgb(png), rgb)
    gray16 = rgb[:, :, 1].astype(np.uint16) * 257
    assert np.array_equal(decode_compressed(cv2.imencode('.png', gray16)[1].tobytes(), 10 ** 6),
                          np.repeat(rgb[:, :, 1:2], 3, axis=2))


def test_compressed_images_over_the_bound_are_refused_from_the_header(rgb):
    big = np.zeros((300, 400, 3), np.uint8)
    for data in (encode_jpeg(big), cv2.imencode('.png', big)[1].tobytes()):
        with pytest.raises(ImageError, match='exceeds'):
            decode_compressed(data, max_pixels=100_000)
    with pytest.raises(ImageError, match='neither JPEG nor PNG'):
        decode_compressed(b'GIF89a....', 10 ** 6)


@pytest.mark.skipif(conversions.CV_BRIDGE is None, reason='cv_bridge is not installed')
@pytest.mark.parametrize('encoding', [e for e in SUPPORTED_ENCODINGS if '16' not in e])
def test_cv_bridge_and_our_conversion_agree(encoding, monkeypatch):
    pixels = np.random.default_rng(1).integers(0, 256, (6, 8, 4), dtype=np.uint8)
    channels = {'rgb8': 3, 'bgr8': 3, 'rgba8': 4, 'bgra8': 4, 'yuv422_yuy2': 2, 'yuv422': 2}
    msg = _msg(pixels[:, :, :channels.get(encoding, 1)].squeeze(), encoding)
    bridged = image_msg_to_rgb(msg)
    monkeypatch.setattr(conversions, 'CV_BRIDGE', None)
    assert np.abs(image_msg_to_rgb(msg).astype(int) - bridged).max() <= 2, encoding


def test_outgoing_messages_hold_arrays_so_checked_setters_stay_cheap(rgb):
    """Built messages carry array.array data, equal to the pixels, also with field checks on.

    With checks on (Humble's only mode) a bytes value is checked element by element.
    """
    header = conversions.Header(frame_id='cam')
    mask = (rgb[..., 0] % 11).astype(np.uint8)
    built = [(conversions.rgb_to_image_msg(rgb, header), rgb),
             (conversions.mask_to_image_msg(mask, header), mask),
             (conversions.compressed_msg(header, 'png', b'\x89PNG'), np.frombuffer(b'\x89PNG',
                                                                                   np.uint8))]
    for msg, pixels in built:
        assert msg.data.typecode == 'B'
        assert bytes(msg.data) == np.ascontiguousarray(pixels).tobytes()
    checked = Image(check_fields=True)
    checked.data = conversions.uint8_field(mask)
    assert bytes(checked.data) == mask.tobytes()
