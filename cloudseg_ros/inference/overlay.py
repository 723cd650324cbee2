"""The rgb8 overlay (class colours over the received frame) on the engine's device.

The cloud's `mask_color` output is the segmentation blended over the low-resolution frame the
robot sent, upsampled to the mask's size. On the CPU this costs 26-50 ms per 2048x1024 frame
(OpenCV on the output threads, `core.palette.overlay`); on a GPU the frame and the mask are
already there, and the blend is a few element-wise kernels plus one 6 MB download. Same
picture as the CPU path within one grey level (OpenCV resizes uint8 with fixed-point weights).
"""
import torch
import torch.nn.functional as F

# auto: on CUDA devices only. Not 'on' / 'off': ROS parses those as booleans (YAML 1.1).
OVERLAY_MODES = ('auto', 'always', 'never')


def overlays_on_device(mode: str, device: torch.device) -> bool:
    """Whether the engine builds overlays (`mode` from OVERLAY_MODES) on `device`."""
    if mode not in OVERLAY_MODES:
        raise ValueError(f'overlay mode must be one of {OVERLAY_MODES}, got {mode!r}')
    return mode == 'always' or (mode == 'auto' and device.type == 'cuda')


def device_overlay(lr: torch.Tensor, mask: torch.Tensor, palette: torch.Tensor, alpha: float,
                   void_index: int) -> torch.Tensor:
    """(3, h, w) float frame in [0, 1] and (H, W) class ids -> (H, W, 3) uint8 overlay.

    The frame is upsampled bilinearly to the mask's size and rounded (the CPU path blends the
    uint8 upsampled frame), then blended with `palette[mask]` (`palette`: (K, 3) uint8 on the
    device) with weight `alpha`; pixels of `void_index` keep the frame.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f'overlay alpha must be in [0, 1], got {alpha}')
    with torch.autocast(lr.device.type, enabled=False):  # blend in float32 whatever runs around
        up = F.interpolate(lr[None].float(), size=tuple(mask.shape), mode='bilinear',
                           align_corners=False)[0]
        up = up.mul(255.0).round_().clamp_(0.0, 255.0)  # (3, H, W)
        ids = mask.long().clamp(0, palette.shape[0] - 1)  # void may lie past the palette
        colours = palette[ids].permute(2, 0, 1).float()  # (H, W, 3) -> (3, H, W)
        out = up * (1.0 - alpha) + colours * alpha
        out = torch.where((mask == void_index)[None], up, out)
        return out.round_().clamp_(0.0, 255.0).to(torch.uint8).permute(1, 2, 0).contiguous()
