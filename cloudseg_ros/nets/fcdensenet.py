"""FC-DenseNet ("One Hundred Layers Tiramisu") for semantic segmentation, trained from scratch.

After Jegou et al., "The One Hundred Layers Tiramisu: Fully Convolutional DenseNets for Semantic
Segmentation", CVPRW 2017, who report 66.9 % mIoU on the CamVid test drive (11 classes) with
FC-DenseNet103 trained from scratch on the same 367 frames we have, against about 0.55 for our
ICNet on drives it never saw. The difference we test: dense connectivity (every layer sees all
earlier features of its block, a strong regulariser with few parameters) and a decoder that
returns to full resolution through skip connections, where ICNet classifies at 1/8.

- down path: 3x3 conv (`stem` channels), then per level a dense block whose output is
  concatenated with its input (saved as the skip), and a transition down (BN-ReLU-1x1 conv,
  dropout, 2x2 max pool);
- bottleneck dense block (only its new features go up);
- up path: 3x3 transposed conv of the previous block's new features, concatenated with the skip,
  dense block; the last block's input and output together feed the 1x1 classifier.

Layer = BN-ReLU-3x3 conv-dropout (element-wise) with `growth` output channels. Presets:
`fcdensenet_config` ('56', '67', '103'). The net ignores a pyramid (the ICNet-only CloudSeg
reuse of the received low-resolution frame); `forward` pads to a multiple of 32 and crops back.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn
import torch.nn.functional as F

# ImageNet RGB statistics, as in ICNet: inputs are [0, 1] RGB, normalisation inside the net.
_RGB_MEAN = (0.485, 0.456, 0.406)
_RGB_STD = (0.229, 0.224, 0.225)

PRESETS = {  # Jegou et al. Table 2: (layers per down block..., bottleneck, growth)
    '56': ((4, 4, 4, 4, 4), 4, 12),
    '67': ((5, 5, 5, 5, 5), 5, 16),
    '103': ((4, 5, 7, 10, 12), 15, 16),
}


@dataclass
class FCDenseNetConfig:
    """Hyper-parameters of FC-DenseNet; the up path mirrors `down_layers`."""

    num_classes: int = 11
    down_layers: Tuple[int, ...] = (4, 5, 7, 10, 12)  # layers per dense block, down path
    bottleneck_layers: int = 15
    growth: int = 16  # channels each layer adds
    stem: int = 48  # channels of the first 3x3 conv
    dropout: float = 0.2


def fcdensenet_config(preset: str, num_classes: int = 11, dropout: float = 0.2
                      ) -> FCDenseNetConfig:
    """The paper's FC-DenseNet56 / 67 / 103 layout."""
    if preset not in PRESETS:
        raise ValueError(f'unknown FC-DenseNet preset {preset!r}; known: {sorted(PRESETS)}')
    down, bottleneck, growth = PRESETS[preset]
    return FCDenseNetConfig(num_classes, down, bottleneck, growth, 48, dropout)


def check_config(config: FCDenseNetConfig) -> None:
    """ValueError naming the first field that cannot build a network (e.g. from a checkpoint)."""
    if not config.down_layers or min(config.down_layers) < 1:
        raise ValueError(f'down_layers must list >= 1 layers per level, got {config.down_layers}')
    for name in ('num_classes', 'bottleneck_layers', 'growth', 'stem'):
        if getattr(config, name) < 1:
            raise ValueError(f'{name} must be >= 1, got {getattr(config, name)}')
    if not 0.0 <= config.dropout < 1.0:
        raise ValueError(f'dropout must be in [0, 1), got {config.dropout}')


def _bn_relu_conv(c_in: int, c_out: int, k: int, dropout: float) -> nn.Sequential:
    layers: List[nn.Module] = [nn.BatchNorm2d(c_in), nn.ReLU(inplace=True),
                               nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False)]
    if dropout > 0:
        # Element-wise, as in the paper. The tenth session's two runs used channel dropout
        # (Dropout2d), a stronger regulariser that may have slowed their fit (MODEL_CARD.md).
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class DenseBlock(nn.Module):
    """`layers` BN-ReLU-conv layers, each fed everything before it; returns the new features."""

    def __init__(self, c_in: int, layers: int, growth: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            _bn_relu_conv(c_in + i * growth, growth, 3, dropout) for i in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new: List[torch.Tensor] = []
        for layer in self.layers:
            new.append(layer(torch.cat([x] + new, 1)))
        return torch.cat(new, 1)


class FCDenseNet(nn.Module):
    """FC-DenseNet: `forward(x)` -> logits (B, num_classes, H, W) for [0, 1] RGB input."""

    def __init__(self, config: FCDenseNetConfig) -> None:
        super().__init__()
        check_config(config)
        self.config = config
        k, p = config.growth, config.dropout
        self.register_buffer('mean', torch.tensor(_RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor(_RGB_STD).view(1, 3, 1, 1), persistent=False)
        self.stem = nn.Conv2d(3, config.stem, 3, padding=1, bias=False)
        channels, skips = config.stem, []
        self.down_blocks, self.transitions = nn.ModuleList(), nn.ModuleList()
        for n in config.down_layers:
            self.down_blocks.append(DenseBlock(channels, n, k, p))
            channels += n * k
            skips.append(channels)
            self.transitions.append(nn.Sequential(_bn_relu_conv(channels, channels, 1, p),
                                                  nn.MaxPool2d(2)))
        self.bottleneck = DenseBlock(channels, config.bottleneck_layers, k, p)
        new = config.bottleneck_layers * k
        self.ups, self.up_blocks = nn.ModuleList(), nn.ModuleList()
        for n, skip in zip(reversed(config.down_layers), reversed(skips)):
            self.ups.append(nn.ConvTranspose2d(new, new, 3, stride=2, padding=1,
                                               output_padding=1, bias=False))
            self.up_blocks.append(DenseBlock(new + skip, n, k, p))
            last_in, new = new + skip, n * k
        self.classifier = nn.Conv2d(last_in + new, config.num_classes, 1)

    @property
    def stride(self) -> int:
        """Input sizes are padded to a multiple of this."""
        return 2 ** len(self.config.down_layers)

    def forward(self, x: torch.Tensor,
                pyramid: Optional[Dict[int, torch.Tensor]] = None) -> torch.Tensor:
        """Logits at the input's size; `pyramid` is accepted for ICNet's interface and unused."""
        h, w = x.shape[-2:]
        s = self.stride
        pad_h, pad_w = -h % s, -w % s
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode='replicate')
        return self._run(x)[..., :h, :w]

    def forward_train(self, x: torch.Tensor, pyramid: Optional[Dict[int, torch.Tensor]] = None
                      ) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """(logits, []) for the training loss: the net has no auxiliary heads."""
        return self.forward(x, pyramid), []

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem((x - self.mean) / self.std)
        skips = []
        for block, down in zip(self.down_blocks, self.transitions):
            x = torch.cat([x, block(x)], 1)
            skips.append(x)
            x = down(x)
        new = self.bottleneck(x)
        for up, block, skip in zip(self.ups, self.up_blocks, reversed(skips)):
            x = torch.cat([up(new), skip], 1)
            new = block(x)
        return self.classifier(torch.cat([x, new], 1))
