"""Where the shipped weights are and which file serves which role.

A source checkout keeps them in `<repo>/models`; a colcon install in `share/cloudseg_ros/models`.
"""
import os
from typing import Dict, Optional, Sequence

from cloudseg_ros.paths import package_file

SEG_FILE = 'seg_icnet.pt'
SR_VARIANTS = ('aware', 'base', 'bilinear')


def sr_file(scale: int, variant: str) -> str:
    """File name of the CARN-M weights for a scale: base or analytics-aware."""
    suffix = '_aware' if variant == 'aware' else ''
    return f'sr_carnm_x{scale}{suffix}.pt'


def default_models_dir() -> str:
    """Return the checkout's models/ or, in a colcon install, share/cloudseg_ros/models."""
    return os.path.dirname(package_file('models', SEG_FILE))


def sr_checkpoints(models_dir: str, variant: str, scales=(2, 3, 4)) -> Dict[int, str]:
    """{scale: path} of the SR weights that exist for the variant ('bilinear' needs none)."""
    if variant not in SR_VARIANTS:
        raise ValueError(f"SR variant '{variant}' not one of {SR_VARIANTS}")
    if variant == 'bilinear':
        return {}
    found = {s: os.path.join(models_dir, sr_file(s, variant)) for s in scales}
    return {s: p for s, p in found.items() if os.path.isfile(p)}


def seg_checkpoint(models_dir: Optional[str] = None) -> str:
    """Path of the segmentation weights (may not exist: the engine says so clearly)."""
    return os.path.join(models_dir or default_models_dir(), SEG_FILE)


def seg_scale_file(scale: int) -> str:
    """File name of a segmentation net adapted to the SR output of one scale."""
    return f'seg_icnet_x{scale}.pt'


def seg_scale_checkpoints(models_dir: str, seg_model: Optional[str] = None,
                          sr_variant: str = 'aware', scales=(2, 3, 4)) -> Dict[int, str]:
    """{scale: path} of the per-scale segmentation nets in `models_dir` (`cloudseg adapt`
    writes them), for frames that the cloud super-resolves.

    None when a segmentation model is named explicitly (the folder's nets were adapted from
    another one) or when SR is not the folder's aware net (`adapt` distils them on the output
    of the aware SR it adapts; base CARN-M or bilinear frames look different). A net whose
    scale has no aware SR in the folder is left out too: no frame would ever reach it.
    """
    if seg_model or sr_variant != 'aware':
        return {}
    served = sr_checkpoints(models_dir, 'aware', scales)
    found = {s: os.path.join(models_dir, seg_scale_file(s)) for s in served}
    return {s: p for s, p in found.items() if os.path.isfile(p)}


def write_tiny_models(folder: str, scales: Sequence[int] = (2, 4),
                      variants: Sequence[str] = ('aware',), seed: int = 0) -> str:
    """Random-init ICNet and CARN-M at test widths under the shipped names; returns `folder`.

    For tests, fuzzing and CPU runs that check plumbing (sizes, encodings, stamps), not
    accuracy: a frame takes milliseconds on a CPU.
    """
    from dataclasses import asdict

    import torch

    from cloudseg_ros.nets.carn import CARNConfig
    from cloudseg_ros.nets.checkpoint import build_model, save_checkpoint
    from cloudseg_ros.nets.icnet import ICNetConfig
    torch.manual_seed(seed)
    os.makedirs(folder, exist_ok=True)
    seg = ICNetConfig(width=8)
    save_checkpoint(os.path.join(folder, SEG_FILE), build_model('icnet', seg), 'icnet',
                    asdict(seg))
    for scale in scales:
        sr = CARNConfig(scale=scale, channels=8, mobile=True)
        for variant in variants:
            save_checkpoint(os.path.join(folder, sr_file(scale, variant)),
                            build_model('carn', sr), 'carn', asdict(sr))
    return str(folder)
