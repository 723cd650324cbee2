"""The engine-side overlay (inference/overlay.py) against the CPU one (core/palette.py)."""
import numpy as np
import pytest
import torch

from cloudseg_ros.core.imageops import upsample_bilinear
from cloudseg_ros.core.palette import CAMVID_PALETTE, overlay
from cloudseg_ros.inference.overlay import device_overlay, overlays_on_device


def test_device_overlay_matches_opencv_within_one_level_and_keeps_void_pixels():
    rng = np.random.default_rng(0)
    lr = rng.integers(0, 256, (18, 30, 3), dtype=np.uint8)
    mask = rng.integers(0, 12, (54, 90)).astype(np.uint8)  # 11 = void (past the palette)
    palette = torch.tensor(np.asarray(CAMVID_PALETTE, np.uint8))
    lr_t = torch.from_numpy(lr).permute(2, 0, 1).float() / 255.0
    got = device_overlay(lr_t, torch.from_numpy(mask), palette, 0.4, 11).numpy()
    up = upsample_bilinear(lr, (90, 54))
    want = overlay(up, mask, CAMVID_PALETTE, 0.4, 11)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    void = mask == 11
    assert np.abs(got[void].astype(int) - up[void].astype(int)).max() <= 1
    with pytest.raises(ValueError, match='alpha'):
        device_overlay(lr_t, torch.from_numpy(mask), palette, -0.1, 11)


def test_overlay_mode_picks_the_device():
    assert overlays_on_device('auto', torch.device('cuda', 0))
    assert not overlays_on_device('auto', torch.device('cpu'))
    assert overlays_on_device('always', torch.device('cpu'))
    assert not overlays_on_device('never', torch.device('cuda', 0))
    with pytest.raises(ValueError, match='overlay mode'):
        overlays_on_device('gpu', torch.device('cpu'))
