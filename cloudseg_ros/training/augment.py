"""Batched augmentation on the accelerator for uint8 image stacks held in device memory.

Segmentation: one `affine_grid` + `grid_sample` per batch does a per-sample random scale, crop
and horizontal flip (a loop of per-sample `F.interpolate` calls would launch B times as many
kernels for the same result); labels go through the same grid with nearest sampling.
SR: random HR patches (sides a multiple of the scale) via one gather, dihedral flips, and LR made
by area averaging and rounding to uint8 levels, which is what `core.imageops.downsample`
(cv2.INTER_AREA at an integer factor) sends over the uplink.
"""
import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F


def to_float_nchw(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 `(B, H, W, 3)` -> float `(B, 3, H, W)` in [0, 1], channels_last memory."""
    x = images_u8.permute(0, 3, 1, 2).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last)


def _uniform(n: int, low: float, high: float, device: torch.device,
             generator: Optional[torch.Generator]) -> torch.Tensor:
    return torch.rand(n, device=device, generator=generator) * (high - low) + low


def scale_crop_grid(batch: int, in_hw: Tuple[int, int], crop_hw: Tuple[int, int],
                    scale_range: Tuple[float, float], flip: bool, device: torch.device,
                    generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Build a sampling grid `(B, ch, cw, 2)`: zoom s ~ U(scale_range), random crop, optional flip.

    A crop of `crop_hw` output pixels covers `crop_hw / s` input pixels; its centre is drawn so
    the crop stays inside the image when it fits and the image stays inside the crop otherwise.
    """
    (h, w), (ch, cw) = in_hw, crop_hw
    s = _uniform(batch, scale_range[0], scale_range[1], device, generator)
    half_w = (cw / s) / w  # half extent of the crop in normalised input units
    half_h = (ch / s) / h
    tx = (torch.rand(batch, device=device, generator=generator) * 2 - 1) * (1 - half_w).abs()
    ty = (torch.rand(batch, device=device, generator=generator) * 2 - 1) * (1 - half_h).abs()
    sign = torch.ones(batch, device=device)
    if flip:
        sign = torch.where(torch.rand(batch, device=device, generator=generator) < 0.5,
                           -sign, sign)
    theta = torch.zeros(batch, 2, 3, device=device)
    theta[:, 0, 0] = half_w * sign
    theta[:, 0, 2] = tx
    theta[:, 1, 1] = half_h
    theta[:, 1, 2] = ty
    return F.affine_grid(theta, [batch, 1, ch, cw], align_corners=False)


def color_jitter(x: torch.Tensor, brightness: float, contrast: float, saturation: float,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Per-sample brightness/contrast/saturation factors ~ U(1 - j, 1 + j); stays in [0, 1]."""
    b = x.shape[0]

    def factor(j: float) -> torch.Tensor:
        return _uniform(b, 1 - j, 1 + j, x.device, generator).view(b, 1, 1, 1)

    if brightness > 0:
        x = x * factor(brightness)
    gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    if contrast > 0:
        mean = gray.mean(dim=(2, 3), keepdim=True)
        x = (x - mean) * factor(contrast) + mean
    if saturation > 0:
        x = (x - gray) * factor(saturation) + gray
    return x.clamp_(0.0, 1.0)


def seg_augment(images_u8: torch.Tensor, labels_u8: torch.Tensor, crop_hw: Tuple[int, int],
                scale_range: Tuple[float, float] = (0.5, 2.0), flip: bool = True,
                jitter: Tuple[float, float, float] = (0.3, 0.3, 0.3), ignore_index: int = 11,
                generator: Optional[torch.Generator] = None
                ) -> Tuple[torch.Tensor, torch.Tensor]:
    """uint8 images `(B, H, W, 3)` + labels `(B, H, W)` -> float `(B, 3, ch, cw)`, long labels.

    Pixels outside the source image (zoomed-out crops) are black with the ignore label.
    """
    b, h, w = labels_u8.shape
    grid = scale_crop_grid(b, (h, w), crop_hw, scale_range, flip, images_u8.device, generator)
    x = F.grid_sample(to_float_nchw(images_u8), grid, mode='bilinear', padding_mode='zeros',
                      align_corners=False)
    # Shift labels by one so zero padding marks outside pixels, then map those to ignore.
    lab = F.grid_sample((labels_u8.float() + 1).unsqueeze(1), grid, mode='nearest',
                        padding_mode='zeros', align_corners=False).squeeze(1).long() - 1
    lab[lab < 0] = ignore_index
    if any(j > 0 for j in jitter):
        x = color_jitter(x, *jitter, generator=generator)
    return x.contiguous(memory_format=torch.channels_last), lab


def random_patches(images_u8: torch.Tensor, batch: int, patch_hw: Tuple[int, int],
                   generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """`batch` random `(ph, pw)` patches of random frames of a uint8 `(N, H, W, 3)` stack."""
    n, h, w, _ = images_u8.shape
    ph, pw = min(patch_hw[0], h), min(patch_hw[1], w)
    dev = images_u8.device
    idx = torch.randint(0, n, (batch,), device=dev, generator=generator)
    y0 = torch.randint(0, h - ph + 1, (batch,), device=dev, generator=generator)
    x0 = torch.randint(0, w - pw + 1, (batch,), device=dev, generator=generator)
    rows = y0[:, None] + torch.arange(ph, device=dev)[None]  # (B, ph)
    cols = x0[:, None] + torch.arange(pw, device=dev)[None]  # (B, pw)
    return images_u8[idx[:, None, None], rows[:, :, None], cols[:, None, :]]  # (B, ph, pw, 3)


def dihedral(x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Random per-sample horizontal/vertical flips (and transposes for square inputs)."""
    b = x.shape[0]

    def coin() -> torch.Tensor:
        return (torch.rand(b, device=x.device, generator=generator) < 0.5).view(b, 1, 1, 1)

    x = torch.where(coin(), x.flip(3), x)
    x = torch.where(coin(), x.flip(2), x)
    if x.shape[2] == x.shape[3]:
        x = torch.where(coin(), x.transpose(2, 3), x)
    return x


def area_downsample(hr: torch.Tensor, scale: int, quantize: bool = True) -> torch.Tensor:
    """`(B, 3, H, W)` in [0, 1] -> `(B, 3, H//s, W//s)` box average, like cv2.INTER_AREA.

    `quantize` rounds to uint8 levels because the uplink carries uint8 frames.
    """
    h, w = hr.shape[-2:]
    hr = hr[..., :h - h % scale, :w - w % scale]
    lr = F.avg_pool2d(hr, scale) if scale > 1 else hr
    if quantize:
        lr = torch.round(lr * 255.0) / 255.0
    return lr


def sr_batch(images_u8: torch.Tensor, batch: int, patch: int, scale: int, augment: bool = True,
             generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Random (LR, HR) float pairs from a uint8 stack; HR patch side rounded to the scale."""
    side = max(scale, patch - patch % scale)
    hr = to_float_nchw(random_patches(images_u8, batch, (side, side), generator))
    if augment:
        hr = dihedral(hr, generator)
    hr = hr.contiguous(memory_format=torch.channels_last)
    return area_downsample(hr, scale), hr


def crop_to_multiple(x: torch.Tensor, multiples: Sequence[int]) -> torch.Tensor:
    """Crop the trailing H, W of `x` down to a multiple of every value in `multiples`."""
    m = 1
    for v in multiples:
        m = m * v // math.gcd(m, v)
    h, w = x.shape[-2:]
    return x[..., :h - h % m, :w - w % m]
