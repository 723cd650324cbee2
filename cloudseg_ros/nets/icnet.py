"""ICNet-style image cascade network for real-time semantic segmentation.

After Zhao et al., "ICNet for Real-Time Semantic Segmentation on High-Resolution Images",
ECCV 2018, scaled down so it trains from scratch in minutes and runs on a CPU in the demo:

- low branch: the 1/4 input through the shared stem (stride 8) and a dilated residual stage with
  a pyramid pooling module (PPM) -> 1/32 of full resolution (deepest, cheapest per pixel);
- mid branch: the 1/2 input through the same stem (shared weights, as in ICNet) -> 1/16;
- high branch: the full input through 3 light strided convs -> 1/8;
- cascade feature fusion (CFF) low+mid -> 1/16, then (low+mid)+high -> 1/8; classifier;
  x8 upsample of the logits;
- optionally (`head_stride=4`) a third CFF with the high branch's 1/4 features, classifier at
  1/4 and x4 upsample. At 480x360 poles and signs are 2-5 pixels wide: even a perfect 1/8
  prediction (labels area-averaged in 8x8 cells, upsampled) scores pole IoU 0.25 and mIoU
  0.84 on CamVid train, at 1/4 0.55 and 0.92.

Pyramid reuse (CloudSeg section 3.2): `forward(x, pyramid={4: lr})` feeds the received
low-resolution frame to the 1/4 branch instead of downsizing the super-resolved image again; the
internal downsizing is area averaging (`area_down`), the same filter as the uplink's INTER_AREA.
"""
from dataclasses import dataclass
import math
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn
import torch.nn.functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval

# ImageNet RGB statistics: inputs are [0, 1] RGB and normalisation lives inside the net.
_RGB_MEAN = (0.485, 0.456, 0.406)
_RGB_STD = (0.229, 0.224, 0.225)
# Padding multiple: the coarsest feature map is 1/32 of the input.
_STRIDE = 32
PYRAMID_FACTORS = (2, 4)
HEAD_STRIDES = (4, 8)


@dataclass
class ICNetConfig:
    """Hyper-parameters of the ICNet-style network; every width derives from `width`."""

    num_classes: int = 11  # output classes (CamVid 11; void is ignored by the loss, not predicted)
    width: int = 32  # base channel width w: high branch w..2w, stem 4w, low branch 8w, CFF 4w
    stem_blocks: int = 1  # residual blocks at 1/4 of the stem input (shared low/mid layers)
    low_blocks: int = 2  # residual blocks in each of the two dilated stages of the low branch
    ppm_bins: Tuple[int, ...] = (1, 2, 3, 6)  # pyramid pooling grid sizes (summed, as in ICNet)
    dropout: float = 0.1  # dropout before the final classifier (training only)
    head_stride: int = 8  # output stride of the classifier: 8 (ICNet) or 4 (one more CFF)


def area_down(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Area-downsize (B, C, H, W) -> (B, C, H // factor, W // factor).

    Box averaging like cv2.INTER_AREA, the uplink's filter; non-divisible sizes use adaptive
    (overlapping) area windows so every size works. Used for the internal image pyramid, so
    `forward(x, {4: area_down(x, 4)})` is exactly `forward(x)`.
    """
    h, w = x.shape[-2:]
    if h % factor == 0 and w % factor == 0:
        return F.avg_pool2d(x, factor)  # exact box filter, faster than adaptive pooling
    size = (max(1, h // factor), max(1, w // factor))
    return F.interpolate(x, size=size, mode='area')


def _conv_bn(c_in: int, c_out: int, k: int = 3, stride: int = 1, dilation: int = 1,
             relu: bool = True) -> nn.Sequential:
    """Conv (no bias, BN follows) + BN (+ ReLU), 'same' padding for odd kernels."""
    layers: List[nn.Module] = [
        nn.Conv2d(c_in, c_out, k, stride, padding=dilation * (k // 2), dilation=dilation,
                  bias=False),
        nn.BatchNorm2d(c_out)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """ResNet basic block with optional stride/dilation and a 1x1 projection when shapes change."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv_bn(c_in, c_out, 3, stride, dilation)
        self.conv2 = _conv_bn(c_out, c_out, 3, 1, dilation, relu=False)
        self.proj = None
        if stride != 1 or c_in != c_out:
            self.proj = _conv_bn(c_in, c_out, 1, stride, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, h, w) -> (B, C_out, h / stride, w / stride)."""
        skip = x if self.proj is None else self.proj(x)
        return F.relu(skip + self.conv2(self.conv1(x)))


class PyramidPooling(nn.Module):
    """ICNet's PPM: average-pool to each bin grid, upsample back and *sum* with the input.

    ICNet sums the pooled maps instead of concatenating (PSPNet) to keep the 1/32 head cheap.
    """

    def __init__(self, channels: int, bins: Tuple[int, ...]) -> None:
        super().__init__()
        self.bins = tuple(bins)
        self.fuse = _conv_bn(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B, C, h, w)."""
        out = x
        for b in self.bins:
            pooled = F.adaptive_avg_pool2d(x, b)  # (B, C, h, w) -> (B, C, b, b)
            out = out + F.interpolate(pooled, size=x.shape[-2:], mode='bilinear',
                                      align_corners=False)
        return self.fuse(out)


class CascadeFeatureFusion(nn.Module):
    """CFF: coarse -> x2 upsample -> dilated 3x3 conv; fine -> 1x1 projection; sum + ReLU.

    Also returns an auxiliary classification of the upsampled coarse map (cascade label guidance).
    """

    def __init__(self, c_coarse: int, c_fine: int, c_out: int, num_classes: int) -> None:
        super().__init__()
        self.coarse = _conv_bn(c_coarse, c_out, 3, dilation=2, relu=False)
        self.fine = _conv_bn(c_fine, c_out, 1, relu=False)
        self.aux = nn.Conv2d(c_coarse, num_classes, 1)

    def forward(self, coarse: torch.Tensor,
                fine: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(B, Cc, h, w), (B, Cf, 2h, 2w) -> fused (B, Co, 2h, 2w), aux logits (B, K, 2h, 2w)."""
        up = F.interpolate(coarse, size=fine.shape[-2:], mode='bilinear', align_corners=False)
        fused = F.relu(self.coarse(up) + self.fine(fine))
        return fused, self.aux(up)


def _stem(width: int, num_blocks: int) -> nn.Sequential:
    """Shared first layers of the low and mid branches: (B, 3, h, w) -> (B, 4w, h/8, w/8)."""
    layers: List[nn.Module] = [
        _conv_bn(3, width, 3, stride=2),
        _conv_bn(width, width),
        _conv_bn(width, 2 * width, 3, stride=2)]
    layers += [BasicBlock(2 * width, 2 * width) for _ in range(num_blocks)]
    layers.append(BasicBlock(2 * width, 4 * width, stride=2))
    return nn.Sequential(*layers)


def _low_branch(config: ICNetConfig) -> nn.Sequential:
    """Deep part of the low branch at 1/32: two dilated stages (no more striding) and the PPM."""
    w, n = config.width, config.low_blocks
    layers: List[nn.Module] = []
    for i in range(n):  # dilation keeps the receptive field growing without shrinking 1/32 maps
        layers.append(BasicBlock(4 * w if i == 0 else 8 * w, 8 * w, dilation=2))
    layers += [BasicBlock(8 * w, 8 * w, dilation=4) for _ in range(n)]
    layers.append(PyramidPooling(8 * w, config.ppm_bins))
    return nn.Sequential(*layers)


def _high_branch(width: int) -> nn.Sequential:
    """High-resolution branch: 3 light strided convs, (B, 3, H, W) -> (B, 2w, H/8, W/8)."""
    return nn.Sequential(
        _conv_bn(3, width, 3, stride=2),
        _conv_bn(width, width, 3, stride=2),
        _conv_bn(width, 2 * width, 3, stride=2))


class ICNet(nn.Module):
    """ICNet-style cascade: (B, 3, H, W) RGB in [0, 1] -> logits (B, num_classes, H, W).

    Any H, W works: branch inputs are padded (replicate) to a multiple of 32 and the logits are
    cropped back, so no caller has to care about the network stride.
    """

    def __init__(self, config: ICNetConfig) -> None:
        super().__init__()
        if config.head_stride not in HEAD_STRIDES:
            raise ValueError(f'head_stride must be one of {HEAD_STRIDES}, '
                             f'got {config.head_stride}')
        self.config = config
        w, k = config.width, config.num_classes
        self.register_buffer('rgb_mean', torch.tensor(_RGB_MEAN).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer('rgb_std', torch.tensor(_RGB_STD).view(1, 3, 1, 1),
                             persistent=False)
        self.stem = _stem(w, config.stem_blocks)
        self.low = _low_branch(config)
        self.high = _high_branch(w)
        self.cff_low_mid = CascadeFeatureFusion(8 * w, 4 * w, 4 * w, k)
        self.cff_mid_high = CascadeFeatureFusion(4 * w, 2 * w, 4 * w, k)
        head_channels = 4 * w
        if config.head_stride == 4:
            head_channels = 2 * w
            self.cff_fine = CascadeFeatureFusion(4 * w, w, head_channels, k)
        self.dropout = nn.Dropout2d(config.dropout)
        self.classifier = nn.Conv2d(head_channels, k, 1)

    def forward(self, x: torch.Tensor,
                pyramid: Optional[Dict[int, torch.Tensor]] = None) -> torch.Tensor:
        """Segment x.

        `pyramid` {2: (B, 3, H/2, W/2), 4: (B, 3, H/4, W/4)} replaces the internally downsized
        inputs of those branches (CloudSeg pyramid reuse).
        """
        logits, _ = self._run(x, pyramid, with_aux=False)
        return logits

    def forward_train(self, x: torch.Tensor, pyramid: Optional[Dict[int, torch.Tensor]] = None
                      ) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Return the logits of `forward` plus the CFF auxiliary logits.

        The auxiliary logits [1/16 stage, 1/8 stage (, 1/4 stage)] (coarse to fine) are each
        upsampled to (B, num_classes, H, W) so they share the labels of the main loss.
        """
        return self._run(x, pyramid, with_aux=True)

    def _run(self, x: torch.Tensor, pyramid: Optional[Dict[int, torch.Tensor]],
             with_aux: bool) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Shared body of forward / forward_train: padded branches, cascade, crop."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f'ICNet expects (B, 3, H, W), got {tuple(x.shape)}')
        if pyramid and not set(pyramid) <= set(PYRAMID_FACTORS):
            raise ValueError(f'pyramid keys must be in {PYRAMID_FACTORS}, got {sorted(pyramid)}')
        h, w = x.shape[-2:]
        hp, wp = _round_up(h, _STRIDE), _round_up(w, _STRIDE)
        x1, x2, x4 = (self._branch_input(x, f, pyramid, hp, wp) for f in (1, 2, 4))
        low = self.low(self.stem(x4))  # (B, 3, Hp/4, Wp/4) -> (B, 8w, Hp/32, Wp/32)
        mid = self.stem(x2)  # (B, 3, Hp/2, Wp/2) -> (B, 4w, Hp/16, Wp/16)
        high4 = self.high[:2](x1)  # (B, 3, Hp, Wp) -> (B, w, Hp/4, Wp/4)
        high = self.high[2](high4)  # -> (B, 2w, Hp/8, Wp/8)
        f16, aux16 = self.cff_low_mid(low, mid)  # -> (B, 4w, Hp/16, Wp/16)
        head, aux8 = self.cff_mid_high(f16, high)  # -> (B, 4w, Hp/8, Wp/8)
        aux_maps = [aux16, aux8]
        if self.config.head_stride == 4:
            head, aux4 = self.cff_fine(head, high4)  # -> (B, 2w, Hp/4, Wp/4)
            aux_maps.append(aux4)
        logits = self.classifier(self.dropout(head))  # -> (B, K, Hp/s, Wp/s)
        if logits.is_cuda:
            # CUDA's NCHW bilinear kernel is several times slower than the NHWC one (measured
            # 2.1 ms vs ~0.3 ms for 8 x 2048x1024 on an H100), and argmax over a contiguous
            # class dimension is cheaper too; the copy at 1/8 resolution costs little.
            logits = logits.contiguous(memory_format=torch.channels_last)
        logits = _upsample_crop(logits, h, w)  # -> (B, K, H, W)
        aux = [_upsample_crop(a, h, w) for a in aux_maps] if with_aux else []
        return logits, aux

    def _branch_input(self, x: torch.Tensor, factor: int,
                      pyramid: Optional[Dict[int, torch.Tensor]], hp: int, wp: int
                      ) -> torch.Tensor:
        """Normalised, padded input of the branch at 1/factor: (B, 3, hp/factor, wp/factor)."""
        h, w = x.shape[-2:]
        size = (max(1, h // factor), max(1, w // factor))
        if factor == 1:
            img = x
        elif pyramid is not None and factor in pyramid:
            img = _fit_pyramid_entry(pyramid[factor], x, size)
        else:
            img = area_down(x, factor)
        img = (img - self.rgb_mean) / self.rgb_std
        pad_h, pad_w = hp // factor - img.shape[-2], wp // factor - img.shape[-1]
        if pad_h or pad_w:
            img = F.pad(img, (0, pad_w, 0, pad_h), mode='replicate')
        return img


def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm into the conv before it, in place (inference only).

    Same outputs up to rounding with one kernel less per layer; the model must be in eval mode
    (the running statistics are what gets folded) and must not be trained afterwards.
    """
    if model.training:
        raise ValueError('fuse_batchnorm needs a model in eval mode')
    for module in model.modules():
        if isinstance(module, nn.Sequential) and len(module) >= 2 \
                and isinstance(module[0], nn.Conv2d) and isinstance(module[1], nn.BatchNorm2d):
            module[0] = fuse_conv_bn_eval(module[0], module[1])
            module[1] = nn.Identity()
    return model


def _round_up(n: int, multiple: int) -> int:
    """Smallest multiple of `multiple` >= n."""
    return int(math.ceil(n / multiple)) * multiple


def _fit_pyramid_entry(img: torch.Tensor, x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Check a pyramid entry against x; resize it if a sender rounded its size differently."""
    if img.dim() != 4 or img.shape[:2] != x.shape[:2]:
        raise ValueError(f'pyramid entry {tuple(img.shape)} does not match input {tuple(x.shape)}')
    if tuple(img.shape[-2:]) != size:
        img = F.interpolate(img, size=size, mode='bilinear', align_corners=False, antialias=True)
    return img


def _upsample_crop(logits: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, K, Hp/f, Wp/f) -> (B, K, Hp, Wp) bilinear -> crop the padding -> (B, K, h, w)."""
    factor = _round_up(h, _STRIDE) // logits.shape[-2]
    up = F.interpolate(logits, scale_factor=factor, mode='bilinear', align_corners=False)
    return up[..., :h, :w]
