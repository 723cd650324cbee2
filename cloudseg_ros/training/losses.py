"""Training losses: ICNet cascade CE, class weights, differentiable SSIM, SR and KL losses.

The reported metrics (mIoU, PSNR, SSIM) live in `core.metrics`; the SSIM here is the same
Gaussian-window formula written in torch so it can be differentiated.
"""
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F


def cascade_ce_loss(logits: torch.Tensor, aux_logits: Sequence[torch.Tensor],
                    labels: torch.Tensor, aux_weights: Sequence[float] = (0.16, 0.4),
                    ignore_index: int = 11,
                    class_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Sum main CE and weighted aux CEs (aux listed coarse -> fine, like `ICNet.forward_train`).

    ICNet's cascade label guidance weights the coarse (1/16) and finer (1/8) auxiliary heads
    0.16 and 0.4. Aux logits at a lower resolution than `labels` are scored against
    nearest-downsampled labels, so the loss works whether or not the net upsamples them.
    """
    loss = _ce(logits, labels, ignore_index, class_weights)
    for weight, aux in zip(aux_weights, aux_logits):
        if weight:
            target = labels
            if aux.shape[-2:] != labels.shape[-2:]:
                target = F.interpolate(labels[:, None].float(), size=aux.shape[-2:],
                                       mode='nearest')[:, 0].long()
            loss = loss + weight * _ce(aux, target, ignore_index, class_weights)
    return loss


def _ce(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int,
        weight: Optional[torch.Tensor]) -> torch.Tensor:
    # float32 logits: bf16 log-softmax over 11+ classes loses the small-probability tail.
    return F.cross_entropy(logits.float(), labels, weight=weight, ignore_index=ignore_index)


def class_weights(labels: np.ndarray, num_classes: int, ignore_index: int,
                  method: str = 'enet', c: float = 1.10) -> np.ndarray:
    """Per-class loss weights from label frequencies ('enet': 1/ln(c + p); 'median' frequency).

    Rare thin classes (pole, sign, bicyclist) dominate mIoU but not pixel counts; the ENet
    weighting with c = 1.10 caps the boost near 10x, softer than median balancing.
    """
    valid = labels[labels != ignore_index]
    counts = np.bincount(valid.ravel(), minlength=num_classes)[:num_classes].astype(np.float64)
    freq = counts / max(1.0, counts.sum())
    if method == 'enet':
        weights = 1.0 / np.log(c + freq)
    elif method == 'median':
        present = freq[freq > 0]
        weights = np.where(freq > 0, np.median(present) / np.maximum(freq, 1e-12), 0.0)
    elif method == 'none':
        weights = np.ones(num_classes)
    else:
        raise ValueError(f"unknown class weighting '{method}' (none, enet, median)")
    weights[counts == 0] = 0.0
    # Normalise to a pixel-weighted mean of 1 so the loss scale (and the LR) stays comparable.
    return (weights / max(1e-12, float((weights * freq).sum()))).astype(np.float32)


def _gaussian_window(size: int, sigma: float, channels: int, device: torch.device,
                     dtype: torch.dtype) -> torch.Tensor:
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-coords ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return g.view(1, 1, 1, size).repeat(channels, 1, 1, 1)  # (C, 1, 1, size)


def ssim_torch(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5,
               data_range: float = 1.0) -> torch.Tensor:
    """Mean SSIM of `(B, C, H, W)` images (Wang et al. 2004, Gaussian 11x11, sigma 1.5).

    Computed in float32 with separable Gaussian filtering ('valid' borders).
    """
    x, y = x.float(), y.float()
    c = x.shape[1]
    g = _gaussian_window(window, sigma, c, x.device, x.dtype)

    def blur(t: torch.Tensor) -> torch.Tensor:
        t = F.conv2d(t, g, groups=c)  # along W
        return F.conv2d(t, g.transpose(2, 3), groups=c)  # along H

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x ** 2
    var_y = blur(y * y) - mu_y ** 2
    cov = blur(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2)
    return (num / den).mean()


def sr_loss(sr: torch.Tensor, hr: torch.Tensor, ssim_weight: float = 0.2) -> torch.Tensor:
    """L1 + ssim_weight * (1 - SSIM): L1 for PSNR, SSIM for local structure (edges)."""
    loss = F.l1_loss(sr.float(), hr.float())
    if ssim_weight:
        loss = loss + ssim_weight * (1.0 - ssim_torch(sr, hr))
    return loss


def seg_kl_loss(logits_sr: torch.Tensor, logits_hr: torch.Tensor) -> torch.Tensor:
    """KL(softmax(hr) || softmax(sr)) per pixel, averaged over pixels (no temperature).

    The HR prediction is the target, so no labels are needed: any frame can fine-tune SR.
    """
    log_p_sr = F.log_softmax(logits_sr.float(), dim=1)
    log_p_hr = F.log_softmax(logits_hr.float().detach(), dim=1)
    kl = F.kl_div(log_p_sr, log_p_hr, log_target=True, reduction='none').sum(dim=1)
    return kl.mean()


def psnr_torch(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample PSNR in dB of `(B, C, H, W)` images in [0, 1] (x clamped like a saved image)."""
    mse = ((x.float().clamp(0, 1) - y.float()) ** 2).flatten(1).mean(dim=1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))
