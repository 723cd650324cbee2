"""Unlabeled frames of a target camera for `train-seg`: consistency only, no labels.

A segmentation net trained on one labelled street data set flips classes on another camera as
soon as its frames are compressed (highway720: full-resolution JPEG q50 agreed only 0.77 with
the unencoded prediction). Unlabeled frames of that camera fix what labels cannot: each is seen
as a clean and a degraded view (the same `codec_data.build_degraded_views` as the labelled
frames), and the degraded prediction is pulled toward the clean one (KL, clean side detached).
No label is invented, so nothing is learned about *which* class is right, only that a codec or a
resampling must not change it.

The first `train_frac` of the frames (in time order) train; the rest are held out and score
`unlabeled_agree_jpeg50`, the agreement-mIoU of the prediction on JPEG q50 copies with that on
the clean frames, at the camera's own resolution.
"""
from dataclasses import dataclass
import time
from typing import Optional, Tuple

import numpy as np
import torch

from .codec_data import CodecRange, build_degraded_views, jpeg_round_trip
from .datasets import group_by_size, load_frames


@dataclass
class UnlabeledData:
    """Training frames and their degraded views on the device, held-out frames on the host."""

    frames: torch.Tensor  # (N, H, W, 3) uint8 on device
    degraded: torch.Tensor  # (N, V, H, W, 3) uint8 on device
    eval_clean: np.ndarray  # (M, H, W, 3) uint8 held-out frames
    eval_jpeg50: np.ndarray  # the same after a JPEG q50 round trip


def split_in_time(frames: np.ndarray, train_frac: float) -> Tuple[np.ndarray, np.ndarray]:
    """(first `train_frac` of the frames, the rest); both non-empty when there are >= 2 frames."""
    if not 0.0 < train_frac <= 1.0:
        raise ValueError(f'unlabeled_train_frac must be in (0, 1], got {train_frac}')
    n = len(frames)
    cut = min(n, max(1, int(round(n * train_frac))))
    if train_frac < 1.0 and n >= 2:
        cut = min(cut, n - 1)
    return frames[:cut], frames[cut:]


def load_unlabeled(source: str, train_frac: float, variants: int, codec_range: CodecRange,
                   device: torch.device, max_frames: int = 0, seed: int = 0) -> UnlabeledData:
    """Read `source` (video or image folder), split it in time and build the degraded views."""
    groups = group_by_size(load_frames(source, max_frames or None))
    frames = groups[0]  # the largest group of one size: a camera has one resolution
    if len(groups) > 1:
        print(f'train-seg: {source}: {sum(len(g) for g in groups[1:])} frames of other sizes '
              f'left out (kept {len(frames)} of {frames.shape[2]}x{frames.shape[1]})', flush=True)
    train, held = split_in_time(frames, train_frac)
    if variants < 1:
        raise ValueError(f'unlabeled_variants must be >= 1, got {variants}')
    t0 = time.perf_counter()
    degraded = build_degraded_views(train, variants, codec_range, seed=seed + 1)
    print(f'train-seg: {len(train)} unlabeled training frames + {len(held)} held out from '
          f'{source} ({frames.shape[2]}x{frames.shape[1]}), {variants} degraded views each '
          f'({time.perf_counter() - t0:.1f}s)', flush=True)
    jpeg50 = np.stack([jpeg_round_trip(f, 50) for f in held]) if len(held) else held
    return UnlabeledData(torch.from_numpy(train).to(device), torch.from_numpy(degraded).to(device),
                         held, jpeg50)


def unlabeled_batch(data: UnlabeledData, batch: int, ignore_index: int,
                    generator: Optional[torch.Generator] = None
                    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random frames, one random degraded view each, and all-void labels `(B, H, W)`.

    The void labels let the unlabeled views ride in the labelled batch: the CE ignores them, and
    geometric augmentation treats them like any frame.
    """
    device = data.frames.device
    idx = torch.randint(0, data.frames.shape[0], (batch,), device=device, generator=generator)
    var = torch.randint(0, data.degraded.shape[1], (batch,), device=device, generator=generator)
    void = torch.full((batch, *data.frames.shape[1:3]), ignore_index, dtype=torch.uint8,
                      device=device)
    return data.frames[idx], data.degraded[idx, var], void
