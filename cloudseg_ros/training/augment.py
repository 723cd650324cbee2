"""Batched augmentation on the accelerator for uint8 image stacks held in device memory.

Segmentation: one `affine_grid` + `grid_sample` per batch does a per-sample random scale, crop
and horizontal flip (a loop of per-sample `F.interpolate` calls would launch B times as many
kernels for the same result); labels go through the same grid with nearest sampling.
SR: random HR patches (sides a multiple of the scale) via one gather, dihedral flips, and LR made
by area averaging and rounding to uint8 levels, which is what `core.imageops.downsample`
(cv2.INTER_AREA at an integer factor) sends over the uplink.
"""
import math
from typing import List, Optional, Sequence, Tuple

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
    """Per-sample brightness/contrast/saturation factors ~ U(1 - j, 1 + j); stays in [0, 1].

    `x` is `(B, 3, H, W)`, or `(B, K, 3, H, W)` for K views of each sample that must get the
    same factors (a clean and a degraded view of one crop).
    """
    b = x.shape[0]
    shape = (b,) + (1,) * (x.dim() - 1)
    ch = x.dim() - 3  # the RGB dimension

    def factor(j: float) -> torch.Tensor:
        return _uniform(b, 1 - j, 1 + j, x.device, generator).view(shape)

    if brightness > 0:
        x = x * factor(brightness)
    r, g, bl = x.unbind(ch)
    gray = (0.299 * r + 0.587 * g + 0.114 * bl).unsqueeze(ch)
    if contrast > 0:
        mean = gray.mean(dim=(-2, -1), keepdim=True)
        x = (x - mean) * factor(contrast) + mean
    if saturation > 0:
        x = (x - gray) * factor(saturation) + gray
    return x.clamp_(0.0, 1.0)


def color_cast(x: torch.Tensor, gain: float, gamma: float,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Per-sample white balance (per-channel gain ~ U(1 - gain, 1 + gain)) and tone curve
    (x ** g, log g ~ U(-gamma, gamma)); stays in [0, 1].

    Drives differ by camera white balance, exposure and time of day more than by anything the
    brightness/contrast jitter covers. `x` is `(B, 3, H, W)` or `(B, K, 3, H, W)` (K views that
    share the factors).
    """
    b = x.shape[0]
    ch = x.dim() - 3
    if gain > 0:
        shape = [b] + [1] * (x.dim() - 1)
        shape[ch] = 3
        gains = torch.rand(b * 3, device=x.device, generator=generator) * 2 * gain + 1 - gain
        x = x * gains.view(shape)
    if gamma > 0:
        g = torch.exp(_uniform(b, -gamma, gamma, x.device, generator))
        x = x.clamp(1e-4, 1.0) ** g.view((b,) + (1,) * (x.dim() - 1))
    return x.clamp(0.0, 1.0)


def cutmix(views: Sequence[torch.Tensor], labels: torch.Tensor, prob: float,
           generator: Optional[torch.Generator] = None
           ) -> Tuple[List[torch.Tensor], torch.Tensor]:
    """Paste a random box of another sample of the batch into each sample with probability `prob`.

    Every view `(B, C, H, W)` and the labels `(B, H, W)` get the same partner and box, so a clean
    and a degraded view stay aligned for the consistency term. The box covers 10..50 % of the
    area: objects appear in contexts of other drives, which a 367-frame training set lacks.
    """
    b, h, w = labels.shape
    dev = labels.device
    if b < 2 or prob <= 0:
        return list(views), labels
    partner = torch.roll(torch.arange(b, device=dev), 1)
    area = _uniform(b, 0.1, 0.5, dev, generator)
    ratio = torch.exp(_uniform(b, -0.7, 0.7, dev, generator))
    bh = (torch.sqrt(area / ratio) * h).clamp(1, h)
    bw = (torch.sqrt(area * ratio) * w).clamp(1, w)
    y0 = torch.rand(b, device=dev, generator=generator) * (h - bh)
    x0 = torch.rand(b, device=dev, generator=generator) * (w - bw)
    rows = torch.arange(h, device=dev).view(1, h, 1)
    cols = torch.arange(w, device=dev).view(1, 1, w)
    inside = ((rows >= y0.view(b, 1, 1)) & (rows < (y0 + bh).view(b, 1, 1))
              & (cols >= x0.view(b, 1, 1)) & (cols < (x0 + bw).view(b, 1, 1)))
    use = torch.rand(b, device=dev, generator=generator) < prob
    box = inside & use.view(b, 1, 1)  # (B, H, W)
    mixed = [torch.where(box.unsqueeze(1), v[partner], v) for v in views]
    return mixed, torch.where(box, labels[partner], labels)


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


def seg_augment_views(images_u8: torch.Tensor, degraded_u8: torch.Tensor,
                      labels_u8: torch.Tensor, crop_hw: Tuple[int, int],
                      scale_range: Tuple[float, float] = (0.5, 2.0), flip: bool = True,
                      jitter: Tuple[float, float, float] = (0.3, 0.3, 0.3),
                      ignore_index: int = 11, generator: Optional[torch.Generator] = None
                      ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Like `seg_augment`, for a clean and a degraded view of the same frames.

    Both views get the same crop, zoom, flip and colour factors, so they differ only by the
    degradation: (clean, degraded) float `(B, 3, ch, cw)` and long labels `(B, ch, cw)`.
    """
    b, h, w = labels_u8.shape
    grid = scale_crop_grid(b, (h, w), crop_hw, scale_range, flip, images_u8.device, generator)
    both = torch.cat([to_float_nchw(images_u8), to_float_nchw(degraded_u8)], dim=1)
    x = F.grid_sample(both, grid, mode='bilinear', padding_mode='zeros', align_corners=False)
    lab = F.grid_sample((labels_u8.float() + 1).unsqueeze(1), grid, mode='nearest',
                        padding_mode='zeros', align_corners=False).squeeze(1).long() - 1
    lab[lab < 0] = ignore_index
    x = x.view(b, 2, 3, *crop_hw)
    if any(j > 0 for j in jitter):
        x = color_jitter(x, *jitter, generator=generator)
    clean, degraded = x.unbind(1)
    return (clean.contiguous(memory_format=torch.channels_last),
            degraded.contiguous(memory_format=torch.channels_last), lab)


def blur_and_noise(x: torch.Tensor, blur_prob: float, max_sigma: float, noise_prob: float,
                   max_noise: float, generator: Optional[torch.Generator] = None
                   ) -> torch.Tensor:
    """Per-sample Gaussian blur (sigma ~ U(0.3, max_sigma)) and Gaussian noise (std ~ U(0, max)).

    Each is applied to a sample with its probability; camera defocus, motion and sensor noise
    the codec-degraded views do not cover.
    """
    b = x.shape[0]
    dev = x.device
    if blur_prob > 0 and max_sigma > 0:
        sigma = _uniform(b, 0.3, max(0.3, max_sigma), dev, generator)
        radius = int(math.ceil(3 * max_sigma))
        t = torch.arange(-radius, radius + 1, device=dev, dtype=x.dtype)
        kernel = torch.exp(-0.5 * (t[None] / sigma[:, None].to(x.dtype)) ** 2)
        kernel = kernel / kernel.sum(1, keepdim=True)  # (B, k)
        use = torch.rand(b, device=dev, generator=generator) < blur_prob
        kernel = torch.where(use[:, None], kernel, (t == 0).to(x.dtype)[None].expand_as(kernel))
        x = _separable_blur(x, kernel)
    if noise_prob > 0 and max_noise > 0:
        std = _uniform(b, 0.0, max_noise, dev, generator)
        std = torch.where(torch.rand(b, device=dev, generator=generator) < noise_prob, std,
                          torch.zeros_like(std))
        noise = torch.randn(x.shape, device=dev, generator=generator, dtype=x.dtype)
        x = x + noise * std.view(b, 1, 1, 1).to(x.dtype)
    return x.clamp(0.0, 1.0).contiguous(memory_format=torch.channels_last)


def _separable_blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Blur `(B, C, H, W)` with a per-sample 1-D kernel `(B, k)` along both axes."""
    b, c, h, w = x.shape
    k = kernel.shape[1]
    pad = k // 2
    flat = x.reshape(1, b * c, h, w)
    weight = kernel.repeat_interleave(c, 0)  # (B*C, k)
    flat = F.conv2d(F.pad(flat, (pad, pad, 0, 0), mode='replicate'),
                    weight.view(b * c, 1, 1, k), groups=b * c)
    flat = F.conv2d(F.pad(flat, (0, 0, pad, pad), mode='replicate'),
                    weight.view(b * c, 1, k, 1), groups=b * c)
    return flat.view(b, c, h, w)


def paired_patches(hr_u8: torch.Tensor, lr_u8: torch.Tensor, batch: int, lr_patch_hw:
                   Tuple[int, int], scale: int, generator: Optional[torch.Generator] = None
                   ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Aligned random patches of decoded LR `(N, V, h, w, 3)` and HR `(N, s*h, s*w, 3)` stacks.

    Frame, variant and position are random per sample; the LR patch at (y, x) covers the HR
    patch at (s*y, s*x). Returns uint8 (LR `(B, ph, pw, 3)`, HR `(B, s*ph, s*pw, 3)`).
    """
    n, v, h, w, _ = lr_u8.shape
    ph, pw = min(lr_patch_hw[0], h), min(lr_patch_hw[1], w)
    dev = lr_u8.device
    idx = torch.randint(0, n, (batch,), device=dev, generator=generator)
    var = torch.randint(0, v, (batch,), device=dev, generator=generator)
    y0 = torch.randint(0, h - ph + 1, (batch,), device=dev, generator=generator)
    x0 = torch.randint(0, w - pw + 1, (batch,), device=dev, generator=generator)
    rows = y0[:, None] + torch.arange(ph, device=dev)[None]
    cols = x0[:, None] + torch.arange(pw, device=dev)[None]
    lr = lr_u8[idx[:, None, None], var[:, None, None], rows[:, :, None], cols[:, None, :]]
    hr_rows = scale * y0[:, None] + torch.arange(scale * ph, device=dev)[None]
    hr_cols = scale * x0[:, None] + torch.arange(scale * pw, device=dev)[None]
    hr = hr_u8[idx[:, None, None], hr_rows[:, :, None], hr_cols[:, None, :]]
    return lr, hr


def dihedral_pair(lr: torch.Tensor, hr: torch.Tensor, vertical: bool = True,
                  generator: Optional[torch.Generator] = None
                  ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The same random flips (and transposes for square patches) on an LR/HR pair."""
    b = lr.shape[0]

    def coin() -> torch.Tensor:
        return (torch.rand(b, device=lr.device, generator=generator) < 0.5).view(b, 1, 1, 1)

    c = coin()
    lr, hr = torch.where(c, lr.flip(3), lr), torch.where(c, hr.flip(3), hr)
    if vertical:
        c = coin()
        lr, hr = torch.where(c, lr.flip(2), lr), torch.where(c, hr.flip(2), hr)
        if lr.shape[2] == lr.shape[3]:
            c = coin()
            lr, hr = torch.where(c, lr.transpose(2, 3), lr), torch.where(c, hr.transpose(2, 3), hr)
    return lr, hr


def mix_codec_lr(lr_decoded: torch.Tensor, hr: torch.Tensor, scale: int, clean_prob: float,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Replace each decoded LR sample by the clean area-downsampled HR with `clean_prob`.

    Keeps SR exact on uncompressed input (the PSNR guard is measured there) while most
    batches teach it to undo codec artefacts.
    """
    if clean_prob <= 0:
        return lr_decoded
    clean = area_downsample(hr, scale)
    use = (torch.rand(hr.shape[0], device=hr.device, generator=generator)
           < clean_prob).view(-1, 1, 1, 1)
    return torch.where(use, clean, lr_decoded)
