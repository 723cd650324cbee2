"""CARN and CARN-M super-resolution networks.

Ahn, Kang and Sohn, "Fast, Accurate, and Lightweight Super-Resolution with Cascading Residual
Network", ECCV 2018, written here from the paper:

- residual blocks (CARN) or efficient residual blocks (CARN-M: group 3x3 convs + 1x1 mixing);
- local cascading: inside a cascading block, the outputs of all earlier blocks are concatenated and
  fused by a 1x1 conv after every residual block;
- global cascading: the same pattern one level up, over the cascading blocks;
- a sub-pixel (PixelShuffle) upsampler, x4 built from two x2 stages.

Unlike the paper, the output is `bilinear(x) + learned residual` with the last conv
zero-initialised, so a fresh network is exactly the bilinear baseline and training only has to
learn the missing high-frequency detail (it converges in far fewer steps than predicting the
whole image).
"""
from dataclasses import dataclass
from typing import List

import torch
from torch import nn
import torch.nn.functional as F

SUPPORTED_SCALES = (2, 3, 4)

# DIV2K RGB mean, the usual input centring for SR nets; [0, 1] RGB in, so no std scaling.
_RGB_MEAN = (0.4488, 0.4371, 0.4040)


@dataclass
class CARNConfig:
    """Hyper-parameters of CARN / CARN-M (paper defaults)."""

    scale: int = 4  # upscaling factor: 2, 3 or 4
    channels: int = 64  # feature width of every block
    num_cascades: int = 3  # cascading blocks (global cascade length)
    blocks_per_cascade: int = 3  # residual blocks per cascading block (local cascade length)
    mobile: bool = False  # CARN-M: efficient residual blocks, shared within a cascading block
    groups: int = 4  # group count of the CARN-M 3x3 convs (ignored when mobile is False)


class ResidualBlock(nn.Module):
    """CARN residual block: conv3x3-ReLU-conv3x3, identity skip, ReLU after the sum."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B, C, h, w)."""
        return F.relu(x + self.conv2(F.relu(self.conv1(x))))


class EfficientResidualBlock(nn.Module):
    """CARN-M block: group conv3x3-ReLU-group conv3x3-ReLU-conv1x1, identity skip, ReLU.

    The group convs cut parameters and FLOPs by `groups`; the 1x1 conv mixes information
    across the groups again.
    """

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, groups=groups)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, groups=groups)
        self.mix = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B, C, h, w)."""
        y = F.relu(self.conv2(F.relu(self.conv1(x))))
        return F.relu(x + self.mix(y))


class Cascade(nn.Module):
    """Cascading of `units`: after unit i, concat [input, out_1 .. out_i] -> 1x1 conv -> ReLU.

    Used both for the local cascade (units = residual blocks) and the global cascade
    (units = cascading blocks). `units` may repeat one module (CARN-M weight sharing).
    """

    def __init__(self, units: List[nn.Module], channels: int) -> None:
        super().__init__()
        self.units = nn.ModuleList(units)
        # fusion i sees the input plus i + 1 unit outputs: (i + 2) * channels in.
        self.fuse = nn.ModuleList(
            nn.Conv2d((i + 2) * channels, channels, 1) for i in range(len(units)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B, C, h, w)."""
        features = [x]
        out = x
        for unit, fuse in zip(self.units, self.fuse):
            features.append(unit(out))
            out = F.relu(fuse(torch.cat(features, dim=1)))  # (B, (i+2)C, h, w) -> (B, C, h, w)
        return out


def _cascading_block(config: CARNConfig) -> Cascade:
    """One cascading block: a local cascade over `blocks_per_cascade` residual blocks."""
    if config.mobile:
        # CARN-M: the paper's recursive variant, one efficient block applied at every position.
        shared = EfficientResidualBlock(config.channels, config.groups)
        units: List[nn.Module] = [shared] * config.blocks_per_cascade
    else:
        units = [ResidualBlock(config.channels) for _ in range(config.blocks_per_cascade)]
    return Cascade(units, config.channels)


class Upsampler(nn.Module):
    """Sub-pixel upsampling: conv to r*r*C channels + PixelShuffle(r); x4 is two x2 stages."""

    def __init__(self, channels: int, scale: int, groups: int = 1) -> None:
        super().__init__()
        factors = [2, 2] if scale == 4 else [scale]
        layers: List[nn.Module] = []
        for r in factors:
            layers += [nn.Conv2d(channels, r * r * channels, 3, padding=1, groups=groups),
                       nn.ReLU(inplace=True), nn.PixelShuffle(r)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B, C, s*h, s*w)."""
        return self.body(x)


class CARN(nn.Module):
    """CARN / CARN-M: (B, 3, h, w) RGB in [0, 1] -> (B, 3, s*h, s*w), not clamped.

    Clamp at inference only: clamping in the net would zero the gradient of out-of-range pixels.
    """

    def __init__(self, config: CARNConfig) -> None:
        super().__init__()
        if config.scale not in SUPPORTED_SCALES:
            raise ValueError(f'CARN scale must be one of {SUPPORTED_SCALES}, got {config.scale}')
        if config.mobile and config.channels % config.groups:
            raise ValueError(f'channels ({config.channels}) must be divisible by groups '
                             f'({config.groups}) for CARN-M')
        self.config = config
        c = config.channels
        self.register_buffer('rgb_mean', torch.tensor(_RGB_MEAN).view(1, 3, 1, 1),
                             persistent=False)
        self.entry = nn.Conv2d(3, c, 3, padding=1)
        self.body = Cascade([_cascading_block(config) for _ in range(config.num_cascades)], c)
        self.upsample = Upsampler(c, config.scale, config.groups if config.mobile else 1)
        self.exit = nn.Conv2d(c, 3, 3, padding=1)
        # Zero residual at init: the untrained net is exactly the bilinear baseline.
        nn.init.zeros_(self.exit.weight)
        nn.init.zeros_(self.exit.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Super-resolve (B, 3, h, w) in [0, 1] to (B, 3, s*h, s*w)."""
        s = self.config.scale
        base = F.interpolate(x, scale_factor=s, mode='bilinear', align_corners=False)
        # base: (B, 3, h, w) -> (B, 3, sh, sw)
        feat = self.entry(x - self.rgb_mean)  # (B, 3, h, w) -> (B, C, h, w)
        feat = self.body(feat)  # (B, C, h, w) -> (B, C, h, w)
        feat = self.upsample(feat)  # (B, C, h, w) -> (B, C, sh, sw)
        return base + self.exit(feat)  # (B, C, sh, sw) -> (B, 3, sh, sw)


def carn(scale: int = 4) -> CARN:
    """Build the standard CARN (64 channels, 3 x 3 residual blocks) for x2, x3 or x4."""
    return CARN(CARNConfig(scale=scale))


def carn_m(scale: int = 4) -> CARN:
    """Build standard CARN-M (64 channels, shared 4-group efficient blocks) for x2, x3 or x4."""
    return CARN(CARNConfig(scale=scale, mobile=True))


def densify_group_convs(model: nn.Module) -> nn.Module:
    """Replace every grouped conv by the equivalent dense conv (block-diagonal weight), in place.

    Same function with `groups` times the FLOPs, yet faster where tensor cores do the work:
    cuDNN's grouped kernels are slow there (H100, bf16, NHWC, CARN-M x4 from 512x256, batch 8:
    7.1 -> 6.6 ms/frame eager, 3.25 -> 2.70 compiled). Inference only: training the dense
    weight would fill its zero blocks. Shared modules stay shared (each is visited once).
    """
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Conv2d) and child.groups > 1:
                setattr(module, name, _dense_conv(child))
    return model


def _dense_conv(conv: nn.Conv2d) -> nn.Conv2d:
    """Dense nn.Conv2d computing exactly what the grouped `conv` computes."""
    dense = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                      conv.padding, conv.dilation, bias=conv.bias is not None,
                      padding_mode=conv.padding_mode)
    dense = dense.to(device=conv.weight.device, dtype=conv.weight.dtype)
    c_out, c_in = conv.out_channels // conv.groups, conv.in_channels // conv.groups
    with torch.no_grad():
        dense.weight.zero_()
        for g in range(conv.groups):  # group g maps inputs g*c_in.. to outputs g*c_out..
            dense.weight[g * c_out:(g + 1) * c_out, g * c_in:(g + 1) * c_in] = \
                conv.weight[g * c_out:(g + 1) * c_out]
        if conv.bias is not None:
            dense.bias.copy_(conv.bias)
    return dense


def count_parameters(model: nn.Module) -> int:
    """Count the distinct trainable parameters (shared modules counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
