"""Where the shipped weights are and which file serves which role.

A source checkout keeps them in `<repo>/models`; a colcon install in `share/cloudseg_ros/models`.
"""
import os
from typing import Dict, Optional

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
