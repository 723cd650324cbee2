"""Unit tests for cloudseg_ros.core.imageops."""
import numpy as np
import pytest

from cloudseg_ros.core.imageops import (ImageError, downsample, resize_mask_nearest,
                                        thumbnail_gray, upsample_bicubic, upsample_bilinear,
                                        validate_rgb)


def _rgb(height: int = 360, width: int = 480, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)


def test_validate_rgb_accepts_and_returns_same_object():
    img = _rgb(10, 20)
    assert validate_rgb(img) is img


@pytest.mark.parametrize('bad, reason', [
    ([[1, 2, 3]], 'numpy array'),
    (np.zeros((4, 4, 3), np.float32), 'uint8'),
    (np.zeros((4, 4), np.uint8), '3 dimensions'),
    (np.zeros((4, 4, 4), np.uint8), 'channels'),
    (np.zeros((0, 4, 3), np.uint8), 'zero size'),
    (np.zeros((4, 9000, 3), np.uint8), 'maximum side'),
])
def test_validate_rgb_rejects_with_reason(bad, reason):
    with pytest.raises(ImageError, match=reason):
        validate_rgb(bad)


def test_validate_rgb_max_side_is_configurable():
    with pytest.raises(ImageError):
        validate_rgb(_rgb(10, 20), max_side=16)
    assert isinstance(ImageError('x'), ValueError)  # callers may catch ValueError


@pytest.mark.parametrize('scale, expected_hw', [(2, (180, 240)), (3, (120, 160)), (4, (90, 120))])
def test_downsample_shapes(scale, expected_hw):
    out = downsample(_rgb(), scale)
    assert out.shape == expected_hw + (3,)
    assert out.dtype == np.uint8


def test_downsample_odd_size_floors():
    assert downsample(_rgb(361, 481), 2).shape == (180, 240, 3)
    assert downsample(_rgb(361, 481), 3).shape == (120, 160, 3)


def test_downsample_scale_one_returns_input():
    img = _rgb(8, 8)
    assert downsample(img, 1) is img


def test_downsample_is_area_average():
    img = np.zeros((4, 4, 3), np.uint8)
    img[:2, :2] = [0, 100, 200]
    img[:2, 2:] = [40, 40, 40]
    img[2:, :2] = [2, 4, 6]  # 2x2 blocks: the area average is the block value
    img[2:, 2:] = [10, 20, 30]
    img[0, 0] = [4, 104, 204]  # one pixel off: block mean rounds to +1
    out = downsample(img, 2)
    np.testing.assert_array_equal(out[0, 0], [1, 101, 201])
    np.testing.assert_array_equal(out[0, 1], [40, 40, 40])
    np.testing.assert_array_equal(out[1, 1], [10, 20, 30])


@pytest.mark.parametrize('scale', [0, 5, -1, 2.0, True, '2'])
def test_downsample_rejects_bad_scale(scale):
    with pytest.raises(ValueError):
        downsample(_rgb(8, 8), scale)


def test_downsample_rejects_too_small_image():
    with pytest.raises(ValueError, match='too small'):
        downsample(_rgb(3, 3), 4)


@pytest.mark.parametrize('resize', [upsample_bilinear, upsample_bicubic])
def test_upsample_shape_and_constant_preserved(resize):
    img = np.full((90, 120, 3), 77, np.uint8)
    out = resize(img, (480, 360))
    assert out.shape == (360, 480, 3)
    assert np.all(out == 77)


@pytest.mark.parametrize('resize', [upsample_bilinear, upsample_bicubic])
def test_upsample_rejects_bad_size(resize):
    with pytest.raises(ValueError):
        resize(_rgb(8, 8), (0, 10))
    with pytest.raises(ValueError):
        resize(_rgb(8, 8), 'big')


def test_upsample_bicubic_rings_and_bilinear_does_not():
    step = np.full((8, 8, 3), 50, np.uint8)
    step[:, 4:] = 200  # a step edge: cubic kernels overshoot it, linear ones cannot
    lin = upsample_bilinear(step, (32, 32))
    cub = upsample_bicubic(step, (32, 32))
    assert lin.min() >= 50 and lin.max() <= 200
    assert cub.min() < 50 and cub.max() > 200


def test_resize_mask_nearest_exact_blocks():
    mask = np.array([[0, 1], [2, 11]], np.uint8)
    up = resize_mask_nearest(mask, (4, 4))
    np.testing.assert_array_equal(up, np.kron(mask, np.ones((2, 2), np.uint8)))
    np.testing.assert_array_equal(resize_mask_nearest(up, (2, 2)), mask)


def test_resize_mask_nearest_samples_pixel_centres():
    mask = np.arange(9, dtype=np.uint8)[None, :].repeat(3, axis=0)
    # 3x shrink: output pixel centres fall on source columns 1, 4, 7 (plain INTER_NEAREST
    # would take 0, 3, 6 and shift the mask by a source pixel)
    np.testing.assert_array_equal(resize_mask_nearest(mask, (3, 1)), [[1, 4, 7]])


def test_resize_mask_nearest_keeps_id_set():
    mask = np.random.default_rng(1).integers(0, 12, (90, 120), np.uint8)
    out = resize_mask_nearest(mask, (480, 360))
    assert out.shape == (360, 480) and out.dtype == np.uint8
    assert set(np.unique(out)) <= set(np.unique(mask))


def test_resize_mask_nearest_rejects_rgb():
    with pytest.raises(ValueError, match='2-D'):
        resize_mask_nearest(_rgb(4, 4), (8, 8))


def test_thumbnail_gray_shape_range_and_luma():
    thumb = thumbnail_gray(_rgb(), 64)
    assert thumb.shape == (48, 64) and thumb.dtype == np.float32
    assert 0.0 <= thumb.min() and thumb.max() <= 1.0
    green = np.zeros((360, 480, 3), np.uint8)
    green[..., 1] = 255
    np.testing.assert_allclose(thumbnail_gray(green), 0.587, atol=2 / 255)  # BT.601 weight
    white = np.full((1024, 2048, 3), 255, np.uint8)
    thumb_2k = thumbnail_gray(white, 64)
    assert thumb_2k.shape == (32, 64)
    np.testing.assert_allclose(thumb_2k, 1.0)


def test_thumbnail_gray_averages_noise():
    flat = np.full((360, 480, 3), 128, np.uint8)
    noisy = np.clip(128 + np.random.default_rng(2).normal(0, 20, flat.shape), 0, 255)
    thumb = thumbnail_gray(noisy.astype(np.uint8))
    assert np.abs(thumb - thumbnail_gray(flat)).max() < 8 / 255  # per-pixel noise was 20/255


def test_thumbnail_gray_rejects_bad_width():
    with pytest.raises(ValueError):
        thumbnail_gray(_rgb(8, 8), 0)
