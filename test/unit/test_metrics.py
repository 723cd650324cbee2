"""Unit tests for cloudseg_ros.core.metrics (hand-computed references)."""
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from cloudseg_ros.core.metrics import (IGNORE_INDEX, PSNR_MAX_DB, RunningConfusion, class_iou,
                                       confusion_matrix, mean_iou, pixel_accuracy, psnr, ssim)

DATA = Path(__file__).resolve().parents[2].parent / 'shared' / 'data' / 'camvid11'

# 3 classes; the two void pixels (11) carry predictions that must not count.
LABEL = np.array([[0, 0, 1, 1],
                  [2, 2, 11, 11]], np.uint8)
PRED = np.array([[0, 1, 1, 1],
                 [2, 0, 2, 0]], np.uint8)
# rows = label, cols = prediction, counted by hand from the 6 non-void pixels
EXPECTED_CM = np.array([[1, 1, 0],
                        [0, 2, 0],
                        [1, 0, 1]])


def test_confusion_matrix_hand_example_with_void():
    cm = confusion_matrix(PRED, LABEL, 3)
    assert cm.dtype == np.int64 and cm.shape == (3, 3)
    np.testing.assert_array_equal(cm, EXPECTED_CM)


def test_iou_and_accuracy_hand_example():
    cm = confusion_matrix(PRED, LABEL, 3)
    # class 0: TP 1, FP 1 (a 2 predicted 0), FN 1 -> 1/3; class 1: 2/(2+1) ; class 2: 1/2
    np.testing.assert_allclose(class_iou(cm), [1 / 3, 2 / 3, 1 / 2])
    assert mean_iou(cm) == pytest.approx(0.5)
    assert pixel_accuracy(cm) == pytest.approx(4 / 6)


def test_absent_class_is_nan_and_left_out_of_mean():
    cm = confusion_matrix(PRED, LABEL, 4)  # class 3 in neither label nor prediction
    iou = class_iou(cm)
    assert math.isnan(iou[3])
    assert mean_iou(cm) == pytest.approx(0.5)


def test_class_only_predicted_has_zero_iou():
    label = np.zeros((2, 2), np.uint8)
    pred = np.array([[0, 0], [0, 1]], np.uint8)
    iou = class_iou(confusion_matrix(pred, label, 2))
    np.testing.assert_allclose(iou, [0.75, 0.0])


def test_all_void_gives_empty_matrix_and_nan():
    cm = confusion_matrix(PRED, np.full_like(LABEL, IGNORE_INDEX), 3)
    assert cm.sum() == 0
    assert math.isnan(mean_iou(cm)) and math.isnan(pixel_accuracy(cm))


def test_ignore_index_none_counts_everything():
    label = np.array([0, 1, 1])
    cm = confusion_matrix(np.array([0, 1, 0]), label, 2, ignore_index=None)
    np.testing.assert_array_equal(cm, [[1, 0], [1, 1]])


def test_confusion_matrix_matches_brute_force():
    rng = np.random.default_rng(0)
    label = rng.integers(0, 12, (37, 53)).astype(np.uint8)
    pred = rng.integers(0, 11, (37, 53)).astype(np.uint8)
    expected = np.zeros((11, 11), np.int64)
    for lab, prd in zip(label.ravel(), pred.ravel()):
        if lab != IGNORE_INDEX:
            expected[lab, prd] += 1
    np.testing.assert_array_equal(confusion_matrix(pred, label, 11), expected)


@pytest.mark.parametrize('pred, label', [
    (np.array([0, 3]), np.array([0, 1])),  # prediction out of range
    (np.array([0, 1]), np.array([0, 5])),  # label out of range and not void
    (np.array([0, 1, 2]), np.array([0, 1])),  # shape mismatch
    (np.array([0.0, 1.0]), np.array([0, 1])),  # float predictions (forgot argmax?)
])
def test_confusion_matrix_rejects_bad_input(pred, label):
    with pytest.raises(ValueError):
        confusion_matrix(pred, label, 3)


def test_running_confusion_equals_one_big_matrix():
    rng = np.random.default_rng(1)
    labels = [rng.integers(0, 12, (20, 30)).astype(np.uint8) for _ in range(3)]
    preds = [rng.integers(0, 11, (20, 30)).astype(np.uint8) for _ in range(3)]
    running = RunningConfusion(11)
    for pred, label in zip(preds, labels):
        running.update(pred, label)
    total = confusion_matrix(np.stack(preds), np.stack(labels), 11)
    np.testing.assert_array_equal(running.cm, total)
    assert running.frames == 3
    assert running.mean_iou() == pytest.approx(mean_iou(total))
    assert running.pixel_accuracy() == pytest.approx(pixel_accuracy(total))
    np.testing.assert_allclose(running.class_iou(), class_iou(total))
    running.reset()
    assert running.cm.sum() == 0 and running.frames == 0


def test_psnr_known_mse():
    a = np.full((10, 10, 3), 100, np.uint8)
    b = a.copy()
    b[::2] += 10  # half the pixels off by 10 -> MSE = 50
    assert psnr(a, b) == pytest.approx(10 * math.log10(255 ** 2 / 50))
    fa = np.zeros((4, 4), np.float32)
    assert psnr(fa, fa + 0.1, max_val=1.0) == pytest.approx(20.0, abs=1e-4)  # MSE 0.01


def test_psnr_identical_is_capped_and_symmetric():
    a = np.random.default_rng(2).integers(0, 256, (8, 8, 3), np.uint8)
    assert psnr(a, a) == PSNR_MAX_DB and math.isfinite(psnr(a, a))
    b = a ^ 1  # flips the lowest bit: uint8 subtraction must not wrap around
    assert psnr(a, b) == pytest.approx(psnr(b, a))
    assert psnr(a, b) == pytest.approx(10 * math.log10(255 ** 2 / 1.0))
    with pytest.raises(ValueError):
        psnr(a, a[:4])


def test_psnr_is_clamped_to_the_cap():
    a = np.zeros((1000, 1000, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 1  # MSE 3.3e-7 -> 108.8 dB uncapped
    assert psnr(a, b) == PSNR_MAX_DB


def _test_image() -> np.ndarray:
    paths = sorted((DATA / 'val' / 'images').glob('*.jpg'))
    if paths:
        bgr = cv2.imread(str(paths[0]), cv2.IMREAD_COLOR)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)[:180, :240]
    yy, xx = np.mgrid[0:180, 0:240]
    gray = 128 + 60 * np.sin(xx / 7.0) * np.cos(yy / 11.0)
    return np.repeat(gray[..., None], 3, axis=2).astype(np.uint8)


def test_ssim_identical_is_one_and_decreases_with_noise():
    img = _test_image()
    assert ssim(img, img) == pytest.approx(1.0, abs=1e-9)
    rng = np.random.default_rng(3)
    scores = []
    for sigma in (3, 10, 30):
        noisy = np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)
        scores.append(ssim(img, noisy))
    assert 1.0 > scores[0] > scores[1] > scores[2] > 0.0


def test_ssim_constant_images_reduce_to_luminance_term():
    # zero variance everywhere: SSIM = (2 mx my + C1) / (mx^2 + my^2 + C1), C1 = (0.01 * 255)^2
    a = np.full((32, 32), 100.0)
    b = np.full((32, 32), 150.0)
    c1 = (0.01 * 255) ** 2
    expected = (2 * 100 * 150 + c1) / (100 ** 2 + 150 ** 2 + c1)
    assert ssim(a, b) == pytest.approx(expected, rel=1e-9)


def test_ssim_rgb_uses_bt601_luma():
    img = _test_image()
    noisy = np.clip(img.astype(int) + 7 * (np.arange(img.size).reshape(img.shape) % 3 - 1),
                    0, 255).astype(np.uint8)
    weights = np.array([0.299, 0.587, 0.114])
    assert ssim(img, noisy) == pytest.approx(ssim(img @ weights, noisy @ weights), rel=1e-12)


def test_ssim_contrast_structure_term():
    # y = x + c keeps variance and covariance: only the luminance term differs from 1
    rng = np.random.default_rng(4)
    x = rng.uniform(50, 150, (40, 40))
    assert ssim(x, x + 0.0) == pytest.approx(1.0)
    assert ssim(x, 2 * x) < ssim(x, x + 5.0) < 1.0


def _ssim_brute_force(x: np.ndarray, y: np.ndarray, max_val: float = 255.0) -> float:
    """Wang et al. 2004 written out: explicit 11x11 Gaussian windows at every valid position."""
    coords = np.arange(11) - 5
    g1 = np.exp(-coords ** 2 / (2 * 1.5 ** 2))
    window = np.outer(g1, g1) / np.outer(g1, g1).sum()
    c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
    values = []
    for i in range(x.shape[0] - 10):
        for j in range(x.shape[1] - 10):
            px, py = x[i:i + 11, j:j + 11], y[i:i + 11, j:j + 11]
            mx, my = (window * px).sum(), (window * py).sum()
            vx = (window * (px - mx) ** 2).sum()
            vy = (window * (py - my) ** 2).sum()
            cov = (window * (px - mx) * (py - my)).sum()
            values.append((2 * mx * my + c1) * (2 * cov + c2)
                          / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
    return float(np.mean(values))


def test_ssim_matches_written_out_definition():
    rng = np.random.default_rng(5)
    x = rng.uniform(0, 255, (24, 27))
    y = np.clip(x + rng.normal(0, 25, x.shape), 0, 255)
    assert ssim(x, y) == pytest.approx(_ssim_brute_force(x, y), rel=1e-6)


def test_ssim_rejects_bad_input():
    with pytest.raises(ValueError):
        ssim(np.zeros((8, 8)), np.zeros((8, 8)))  # smaller than the 11x11 window
    with pytest.raises(ValueError):
        ssim(np.zeros((20, 20)), np.zeros((20, 21)))
    with pytest.raises(ValueError):
        ssim(np.zeros((20, 20, 4)), np.zeros((20, 20, 4)))
