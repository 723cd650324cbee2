"""Appearance randomisation for generalising to drives the segmentation net never saw.

The held-out CamVid drive is lost in classes whose look changes from street to street (pavement,
fence, building; `models/MODEL_CARD.md`), not in compression, and photometric jitter, white
balance and CutMix moved it by no more than noise. Two domain-generalisation tools that change
texture and style rather than colour alone:

- `random_convolution` (RandConv, Xu et al., ICLR 2021): the image through a random 1x1, 3x3 or
  5x5 convolution, rescaled to the image's own channel statistics and blended with it, so local
  texture and colour mixing differ on every step while shapes stay.
- `MixStyle` (Zhou et al., ICLR 2021): forward hooks on early layers that, in training only,
  replace each sample's per-channel feature mean and std by a random blend with another
  sample's: the features of one street appear in the style of another.

Both keep a clean view and its degraded copy aligned: the views of one sample get the same
kernel, blend and MixStyle partner, so the consistency term still compares like with like.
"""
import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

RANDCONV_KERNELS = (1, 3, 5)


def random_convolution(views: torch.Tensor, prob: float,
                       kernel_sizes: Sequence[int] = RANDCONV_KERNELS,
                       generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """RandConv on `(B, K, 3, H, W)` images in [0, 1]: K views per sample share the kernel.

    With probability `prob` per sample: out = a * x + (1 - a) * r(x), a ~ U(0, 1), where r is a
    random convolution (one kernel size per call, weights ~ N(0, 1 / (3 k^2))) whose output is
    shifted and scaled per channel to the mean and std of the sample's first view, so the result
    stays an image of the same brightness range. Returns the same shape, clamped to [0, 1].
    """
    if views.dim() != 5 or views.shape[2] != 3:
        raise ValueError(f'random_convolution expects (B, K, 3, H, W), got {tuple(views.shape)}')
    if prob <= 0:
        return views
    b, k, _, h, w = views.shape
    dev = views.device
    size = int(kernel_sizes[int(torch.randint(len(kernel_sizes), (1,)))])
    weight = torch.randn(b * 3, 3, size, size, device=dev, generator=generator,
                         dtype=views.dtype) / math.sqrt(3 * size * size)
    x = views.permute(1, 0, 2, 3, 4).reshape(k, b * 3, h, w)  # sample b = conv group b
    if size > 1:
        x = F.pad(x, (size // 2,) * 4, mode='reflect')
    r = F.conv2d(x, weight, groups=b).reshape(k, b, 3, h, w).permute(1, 0, 2, 3, 4)
    r = _match_first_view_stats(r, views)
    alpha = torch.rand(b, device=dev, generator=generator, dtype=views.dtype)
    alpha = alpha.view(b, 1, 1, 1, 1)
    use = (torch.rand(b, device=dev, generator=generator) < prob).view(b, 1, 1, 1, 1)
    mixed = alpha * views + (1 - alpha) * r
    return torch.where(use, mixed, views).clamp(0.0, 1.0)


def _match_first_view_stats(r: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
    """Per sample and channel, map r's first-view mean/std onto the image's (all views alike)."""
    dims = (-2, -1)
    r_mean = r[:, :1].mean(dims, keepdim=True)
    r_std = r[:, :1].std(dims, keepdim=True) + 1e-5
    x_mean = views[:, :1].mean(dims, keepdim=True)
    x_std = views[:, :1].std(dims, keepdim=True)
    return (r - r_mean) / r_std * x_std + x_mean


def paired_partners(blocks: Sequence[Tuple[int, int]], device: torch.device,
                    generator: Optional[torch.Generator] = None
                    ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Row partners for a batch laid out as blocks of `copies` views of `n` samples.

    `blocks` [(n, copies), ...]: a block holds rows view 0 of samples 0..n-1, then view 1 of the
    same samples, ... Returns (partner row of every row, sample index of every row); the views of
    one sample get partners that are the same views of one other sample.
    """
    partner: List[torch.Tensor] = []
    owner: List[torch.Tensor] = []
    offset = sample = 0
    for n, copies in blocks:
        perm = torch.randperm(n, device=device, generator=generator)
        for c in range(copies):
            partner.append(offset + c * n + perm)
            owner.append(sample + torch.arange(n, device=device))
        offset += n * copies
        sample += n
    return torch.cat(partner), torch.cat(owner)


class MixStyle:
    """Feature-statistics mixing on chosen modules' outputs, in training mode only.

    Call `next_batch(blocks)` before each training forward: with probability `prob` that batch is
    mixed (every hooked layer, one partner and one Beta(alpha, alpha) weight per sample);
    otherwise, and always in eval mode, the hooks return the output unchanged. `remove()`
    detaches the hooks.
    """

    def __init__(self, modules: Sequence[nn.Module], prob: float, alpha: float = 0.1,
                 eps: float = 1e-6) -> None:
        self.prob = prob
        self.beta = torch.distributions.Beta(alpha, alpha)
        self.eps = eps
        self._partner: Optional[torch.Tensor] = None
        self._weight: Optional[torch.Tensor] = None
        self._handles = [m.register_forward_hook(self._hook) for m in modules]

    def next_batch(self, blocks: Sequence[Tuple[int, int]], device: torch.device) -> None:
        """Draw whether, and with whom, the rows of the next batch are mixed."""
        self._partner = None
        if self.prob <= 0 or torch.rand(1).item() >= self.prob:
            return
        partner, owner = paired_partners(blocks, device)
        samples = sum(n for n, _ in blocks)
        self._weight = self.beta.sample((samples,)).to(device)[owner].view(-1, 1, 1, 1)
        self._partner = partner

    def _hook(self, module: nn.Module, inputs: Tuple[torch.Tensor, ...],
              output: torch.Tensor) -> Optional[torch.Tensor]:
        if not module.training or self._partner is None \
                or output.shape[0] != self._partner.shape[0]:
            return None
        x = output.float()  # bf16 statistics of large maps are too coarse
        mean = x.mean((2, 3), keepdim=True).detach()
        std = (x.var((2, 3), keepdim=True) + self.eps).sqrt().detach()
        lam = self._weight
        mixed_mean = lam * mean + (1 - lam) * mean[self._partner]
        mixed_std = lam * std + (1 - lam) * std[self._partner]
        return ((x - mean) / std * mixed_std + mixed_mean).to(output.dtype)

    def remove(self) -> None:
        """Detach every hook (the model is as it was)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []


def mixstyle_layers(model: nn.Module) -> List[nn.Module]:
    """The early layers of our ICNet that MixStyle hooks: the stem's and the high branch's first
    two convolutions (style lives in early features; later ones carry the classes)."""
    return [model.stem[0], model.stem[1], model.high[0], model.high[1]]
