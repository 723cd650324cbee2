"""`cloudseg train-sr`: train base CARN-M super-resolution on (LR, HR) pairs.

HR frames: the training split's images (labels unused) plus any unlabeled frames given in
`extra_frames` (image folders or video files). They live on the device as uint8; every step
cuts random HR patches (side a multiple of the scale), applies dihedral flips and makes LR by
area averaging + uint8 rounding, i.e. `core.imageops.downsample`. Loss: L1 + w * (1 - SSIM).
Validation: PSNR of full val frames (val images are never trained on).

    cloudseg train-sr --set scale=4 --set time_budget_s=150 --out out/sr_x4
"""
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from cloudseg_ros.nets.carn import CARN
from cloudseg_ros.nets.checkpoint import build_model as build_net
from cloudseg_ros.nets.checkpoint import load_checkpoint, save_checkpoint as save_net

from . import common
from .augment import area_downsample, sr_batch, to_float_nchw
from .config import config_dict, run_training_command, seed_everything
from .datasets import group_by_size, load_frames
from .losses import psnr_torch, sr_loss


@dataclass
class SRTrainConfig:
    """Everything a base SR run depends on (stored in the checkpoint)."""

    data: str = '../shared/data/camvid11'  # dataset root (camvid11 layout)
    train_split: str = 'train'  # its images are HR training frames
    extra_frames: str = ''  # comma-separated image folders / videos of unlabeled HR frames
    max_train_items: int = 0  # 0: all frames of every source
    val_split: str = 'val'  # PSNR monitoring only
    max_val_items: int = 0
    scale: int = 4
    channels: int = 64  # CARNConfig (defaults: CARN-M)
    num_cascades: int = 3
    blocks_per_cascade: int = 3
    mobile: bool = True
    groups: int = 4
    patch: int = 192  # HR patch side (rounded down to a multiple of scale)
    batch_size: int = 64
    steps: int = 20000
    time_budget_s: float = 0.0  # 0: no time limit
    optimizer: str = 'adamw'
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = 'cosine'
    warmup_frac: float = 0.02
    ssim_weight: float = 0.1  # loss = L1 + w * (1 - SSIM); 1.0 left x4 below bicubic PSNR
    bf16: bool = True
    channels_last: bool = True
    compile: bool = False
    log_every: int = 100
    eval_every: int = 1000
    eval_batch: int = 16
    seed: int = 0
    half_weights: bool = False


def build_model(cfg: SRTrainConfig) -> CARN:
    """CARN(-M) for the configured scale."""
    return build_net('carn', {'scale': cfg.scale, 'channels': cfg.channels,
                              'num_cascades': cfg.num_cascades,
                              'blocks_per_cascade': cfg.blocks_per_cascade,
                              'mobile': cfg.mobile, 'groups': cfg.groups})


def load_hr_frames(data: str, split: str, extra: str, max_items: int) -> List[np.ndarray]:
    """HR frames of `data/split/images` plus every extra folder / video, as RGB arrays."""
    sources = [os.path.join(data, split)] if data and split else []
    sources += [s.strip() for s in extra.split(',') if s.strip()]
    frames: List[np.ndarray] = []
    for source in sources:
        got = load_frames(source, max_items or None)
        print(f'frames: {len(got)} from {source}', flush=True)
        frames += got
    if not frames:
        raise FileNotFoundError('no HR training frames (check data / extra_frames)')
    return frames


@dataclass
class FramePools:
    """HR frames on the device, one uint8 stack per frame size, plus host val frames."""

    pools: List[torch.Tensor]  # each (N_i, H_i, W_i, 3) uint8
    weights: torch.Tensor  # sampling probability of each pool (proportional to N_i)
    val: np.ndarray  # (M, H, W, 3) uint8, or empty


def build_loaders(cfg: SRTrainConfig, device: torch.device) -> FramePools:
    """Decode HR frames once and move them to `device` grouped by size."""
    frames = load_hr_frames(cfg.data, cfg.train_split, cfg.extra_frames, cfg.max_train_items)
    groups = group_by_size(frames)
    pools = [common.to_device_stack(g, device) for g in groups]
    weights = torch.tensor([float(len(g)) for g in groups])
    val = np.zeros((0, 1, 1, 3), np.uint8)
    if cfg.val_split:
        val = np.stack(load_frames(os.path.join(cfg.data, cfg.val_split),
                                   cfg.max_val_items or None))
    return FramePools(pools, weights / weights.sum(), val)


def sample_pool(pools: FramePools) -> torch.Tensor:
    """One frame stack, chosen in proportion to its size (every frame equally likely)."""
    if len(pools.pools) == 1:
        return pools.pools[0]
    return pools.pools[int(torch.multinomial(pools.weights, 1))]


def train_step(forward, optimizer: torch.optim.Optimizer, pools: FramePools,
               cfg: SRTrainConfig, device: torch.device) -> Dict[str, torch.Tensor]:
    """One optimiser step on random patches; returns {'loss', 'psnr'} tensors."""
    lr_img, hr = sr_batch(sample_pool(pools), cfg.batch_size, cfg.patch, cfg.scale)
    with common.autocast(device, cfg.bf16):
        sr = forward(lr_img)
    loss = sr_loss(sr, hr, cfg.ssim_weight)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {'loss': loss, 'psnr': psnr_torch(sr.detach(), hr).mean()}


@torch.no_grad()
def super_resolve(model: nn.Module, lr_batch: torch.Tensor, bf16: bool = True) -> torch.Tensor:
    """SR of float LR `(B, 3, h, w)`, clamped and rounded to uint8 levels (what is shipped)."""
    with common.autocast(lr_batch.device, bf16):
        sr = model(lr_batch)
    return torch.round(sr.float().clamp(0, 1) * 255.0) / 255.0


@torch.no_grad()
def evaluate(model: nn.Module, frames: np.ndarray, scale: int, device: torch.device,
             batch: int = 16, bf16: bool = True) -> Dict[str, float]:
    """Mean PSNR of SR and of bilinear upsampling over full frames (HR cropped to the scale)."""
    if len(frames) == 0:
        return {}
    psnr_sr, psnr_bil = [], []
    with common.eval_mode(model):
        for i in range(0, len(frames), batch):
            hr = to_float_nchw(torch.from_numpy(frames[i:i + batch]).to(device))
            hr = hr[..., :hr.shape[-2] // scale * scale, :hr.shape[-1] // scale * scale]
            lr_img = area_downsample(hr, scale)
            sr = super_resolve(model, lr_img, bf16)
            bil = torch.nn.functional.interpolate(lr_img, scale_factor=scale, mode='bilinear',
                                                  align_corners=False)
            psnr_sr.append(psnr_torch(sr, hr))
            psnr_bil.append(psnr_torch(torch.round(bil.clamp(0, 1) * 255) / 255, hr))
    return {'psnr': float(torch.cat(psnr_sr).mean()),
            'psnr_bilinear': float(torch.cat(psnr_bil).mean())}


def save_checkpoint(out_dir: str, model: CARN, optimizer: torch.optim.Optimizer,
                    state: common.LoopState, metrics: Dict[str, float], cfg: object,
                    metric: str = 'psnr') -> None:
    """last.pt + train_state.pt every time; best.pt when `metric` improved."""
    os.makedirs(out_dir, exist_ok=True)
    half = bool(getattr(cfg, 'half_weights', False))
    save_net(os.path.join(out_dir, common.LAST_FILE), model, 'carn', None, state.step,
             metrics, config_dict(cfg), half)
    value = float(metrics.get(metric, float('nan')))
    if value == value and value > state.best:
        state.best = value
        save_net(os.path.join(out_dir, common.BEST_FILE), model, 'carn', None, state.step,
                 metrics, config_dict(cfg), half)
    common.save_train_state(out_dir, optimizer, state)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse arguments, train, and leave last.pt / best.pt in --out."""
    return run_training_command('train-sr', __doc__, SRTrainConfig, 'out/sr', run, argv)


def run(cfg: SRTrainConfig, out_dir: str, device: torch.device, resume: bool) -> int:
    """Build, optionally resume, train and report; returns the exit code."""
    seed_everything(cfg.seed)
    common.setup_backend(device)
    pools = build_loaders(cfg, device)
    model = build_model(cfg)
    if resume:
        model, _ = load_checkpoint(os.path.join(out_dir, common.LAST_FILE), 'cpu')
    model.to(device).train()
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = common.build_optimizer(model.parameters(), cfg.optimizer, cfg.lr,
                                       cfg.weight_decay)
    state = common.load_train_state(out_dir, optimizer) if resume else common.LoopState()
    print(f'train-sr: CARN{"-M" if cfg.mobile else ""} x{cfg.scale}, '
          f'{common.parameter_count(model) / 1e6:.3f} M parameters, '
          f'{sum(len(p) for p in pools.pools)} HR frames, device {device}, '
          f'from step {state.step}', flush=True)
    forward = common.maybe_compile(model, cfg.compile, device)
    spec = common.LoopSpec(cfg.steps, cfg.time_budget_s, cfg.log_every, cfg.eval_every, cfg.lr,
                           cfg.schedule, cfg.warmup_frac)
    metrics = common.run_loop(
        spec, state, optimizer,
        lambda step: train_step(forward, optimizer, pools, cfg, device),
        lambda: evaluate(model, pools.val, cfg.scale, device, cfg.eval_batch, cfg.bf16),
        lambda st, m: save_checkpoint(out_dir, model, optimizer, st, m, cfg), 'train-sr')
    print(f'train-sr: done at step {state.step} in {state.elapsed_s:.0f}s; val PSNR '
          f'{metrics.get("psnr", float("nan")):.3f} dB (bilinear '
          f'{metrics.get("psnr_bilinear", float("nan")):.3f})', flush=True)
    return 0
