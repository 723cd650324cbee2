"""Segmentation and image-quality metrics, the single implementation used everywhere.

Training, evaluation, the benchmarks and the controller all import these, so numbers from
different tools are comparable. Conventions:

- Confusion matrices are int64 ``(C, C)`` with rows = ground truth, columns = prediction.
- Void pixels (label ``IGNORE_INDEX``) are excluded; any other label or prediction outside
  ``0..C-1`` is an error, because silently dropping pixels would inflate the scores.
- IoU of a class absent from both ground truth and prediction is NaN and is left out of the
  mean (a frame without bicycles says nothing about bicycle IoU). A class present in only one
  of them has IoU 0.
"""
import math
from typing import Optional

import cv2
import numpy as np

IGNORE_INDEX = 11
# PSNR of identical images is +inf; we return this finite cap instead so per-frame values can
# be averaged and written to JSON. Every PSNR is clamped to it: above 100 dB the difference is
# a handful of 1-LSB pixels in a megapixel image, which no experiment here can tell apart.
PSNR_MAX_DB = 100.0
# Wang et al. 2004 constants.
SSIM_K1 = 0.01
SSIM_K2 = 0.03
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
# BT.601 luma weights (R, G, B), as in JPEG and cv2.COLOR_RGB2GRAY.
_LUMA_601 = np.array([0.299, 0.587, 0.114])


def confusion_matrix(pred: np.ndarray, label: np.ndarray, num_classes: int,
                     ignore_index: Optional[int] = IGNORE_INDEX) -> np.ndarray:
    """Count (label, prediction) pairs into an int64 (C, C) matrix, skipping void labels.

    `pred` and `label` are integer arrays of the same shape. Raises ValueError on a shape
    mismatch or on any non-void value outside 0..num_classes-1.
    """
    if pred.shape != label.shape:
        raise ValueError(f'pred shape {pred.shape} != label shape {label.shape}')
    if num_classes <= 0:
        raise ValueError(f'num_classes must be positive, got {num_classes}')
    for name, values in (('label', label), ('pred', pred)):
        if not np.issubdtype(values.dtype, np.integer):
            raise ValueError(f'{name} must hold integer class ids, got dtype {values.dtype}')
    pred = pred.ravel()
    label = label.ravel()
    if ignore_index is not None:
        keep = label != ignore_index
        if not keep.all():
            pred, label = pred[keep], label[keep]
    if label.size == 0:
        return np.zeros((num_classes, num_classes), np.int64)
    for name, values in (('label', label), ('pred', pred)):
        low, high = int(values.min()), int(values.max())
        if low < 0 or high >= num_classes:
            raise ValueError(f'{name} values must be in 0..{num_classes - 1} (or void), '
                             f'got range {low}..{high}')
    # One bincount over combined indices is ~10x faster than np.add.at or a histogram2d.
    flat = label.astype(np.int64) * num_classes + pred.astype(np.int64)
    counts = np.bincount(flat, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def class_iou(cm: np.ndarray) -> np.ndarray:
    """Per-class IoU = TP / (TP + FP + FN); NaN for classes absent in both label and pred."""
    cm = np.asarray(cm, dtype=np.float64)
    true_pos = np.diag(cm)
    union = cm.sum(axis=0) + cm.sum(axis=1) - true_pos
    iou = np.full(cm.shape[0], np.nan)
    present = union > 0
    iou[present] = true_pos[present] / union[present]
    return iou


def mean_iou(cm: np.ndarray) -> float:
    """Mean of class_iou over classes that occur; NaN if no class occurs at all."""
    iou = class_iou(cm)
    if np.isnan(iou).all():
        return float('nan')
    return float(np.nanmean(iou))


def pixel_accuracy(cm: np.ndarray) -> float:
    """Fraction of non-void pixels classified correctly; NaN for an empty matrix."""
    cm = np.asarray(cm)
    total = cm.sum()
    return float(np.trace(cm) / total) if total > 0 else float('nan')


def psnr(a: np.ndarray, b: np.ndarray, max_val: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB over all pixels and channels, capped at PSNR_MAX_DB.

    Works for uint8 (max_val 255) or float images (pass max_val=1.0 for [0, 1] data). RGB
    inputs are compared on all three channels, not on luma.
    """
    if a.shape != b.shape:
        raise ValueError(f'shape mismatch: {a.shape} vs {b.shape}')
    diff = a.astype(np.float64) - b.astype(np.float64)
    mse = float(np.mean(diff * diff))
    if mse == 0.0:
        return PSNR_MAX_DB
    return min(PSNR_MAX_DB, 10.0 * math.log10(max_val * max_val / mse))


def _luma(img: np.ndarray) -> np.ndarray:
    """float64 BT.601 luma of an RGB image, or the image itself if already 2-D."""
    if img.ndim == 2:
        return img.astype(np.float64)
    if img.ndim == 3 and img.shape[2] == 3:
        return img.astype(np.float64) @ _LUMA_601
    raise ValueError(f'expected (H, W) or (H, W, 3), got shape {img.shape}')


def ssim(a: np.ndarray, b: np.ndarray, max_val: float = 255.0) -> float:
    """Mean structural similarity (Wang et al. 2004) between two images.

    RGB inputs are compared on their BT.601 luma Y = 0.299 R + 0.587 G + 0.114 B (full range,
    same data range as the input; SR papers' MATLAB rgb2ycbcr uses the 16..235 Y instead and
    reads slightly differently). 2-D inputs are used as they are. Local statistics use an
    11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, and the map is averaged over
    the 'valid' region (5 px border cropped) so padding never enters the score.
    """
    if a.shape != b.shape:
        raise ValueError(f'shape mismatch: {a.shape} vs {b.shape}')
    x, y = _luma(a), _luma(b)
    if min(x.shape) < SSIM_WINDOW:
        raise ValueError(f'images must be at least {SSIM_WINDOW} px on each side for SSIM')
    c1 = (SSIM_K1 * max_val) ** 2
    c2 = (SSIM_K2 * max_val) ** 2

    def blur(img: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(img, (SSIM_WINDOW, SSIM_WINDOW), SSIM_SIGMA)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x * mu_x
    var_y = blur(y * y) - mu_y * mu_y
    cov = blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
    border = SSIM_WINDOW // 2
    return float(ssim_map[border:-border, border:-border].mean())


class RunningConfusion:
    """Confusion matrix accumulated over many frames (dataset-level mIoU, not a mean of means)."""

    def __init__(self, num_classes: int, ignore_index: Optional[int] = IGNORE_INDEX) -> None:
        """Start with an all-zero (num_classes, num_classes) matrix."""
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.cm = np.zeros((self.num_classes, self.num_classes), np.int64)
        self.frames = 0

    def update(self, pred: np.ndarray, label: np.ndarray) -> np.ndarray:
        """Add one frame (or batch) and return that frame's own confusion matrix."""
        frame_cm = confusion_matrix(pred, label, self.num_classes, self.ignore_index)
        self.cm += frame_cm
        self.frames += 1
        return frame_cm

    def reset(self) -> None:
        """Zero the matrix and the frame count."""
        self.cm[:] = 0
        self.frames = 0

    def class_iou(self) -> np.ndarray:
        """Per-class IoU of everything accumulated so far."""
        return class_iou(self.cm)

    def mean_iou(self) -> float:
        """Return the mIoU of everything accumulated so far."""
        return mean_iou(self.cm)

    def pixel_accuracy(self) -> float:
        """Pixel accuracy of everything accumulated so far."""
        return pixel_accuracy(self.cm)
