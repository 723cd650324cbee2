"""`cloudseg train-sr`: train base CARN-M super-resolution on (LR, HR) pairs.

HR frames: the training split's images (labels unused) plus any unlabeled frames given in
`extra_frames` (image folders or video files). They live on the device as uint8; every step
cuts random HR patches (side a multiple of the scale) and applies dihedral flips. LR is what the
uplink delivers: `codec_variants` decoded copies of every frame are made once before training
(`core` INTER_AREA downsample, then JPEG q 30..95 or H.264 CRF 18..38, decoded by `core`, see
`codec_data`), and a share `codec_clean_prob` of samples uses the clean area-downsampled frame,
so SR removes codec artefacts and stays exact on clean input. `codec_variants=0` trains on
clean LR only (the original recipe). Loss: L1 + w * (1 - SSIM). Validation: PSNR of full val
frames from clean LR and from JPEG q50 LR (val images are never trained on).

    cloudseg train-sr --set scale=4 --set time_budget_s=150 --out out/sr_x4
"""
import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from cloudseg_ros.core.codecs import EDGE_DEFAULT_X264_PRESET
from cloudseg_ros.nets.carn import CARN
from cloudseg_ros.nets.checkpoint import build_model as build_net
from cloudseg_ros.nets.checkpoint import load_checkpoint, save_checkpoint as save_net

from . import common
from .augment import (area_downsample, dihedral_pair, mix_codec_lr, paired_patches, sr_batch,
                      to_float_nchw)
from .codec_data import CodecRange, build_lr_variants, cached, codec_range_of, crop_to_scale
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
    codec_variants: int = 8  # decoded LR copies per frame (0: clean LR only)
    codec_clean_prob: float = 0.25  # share of samples trained on clean (uncompressed) LR
    codecs: Tuple[str, ...] = ('jpeg', 'h264')
    jpeg_quality_min: int = 30
    jpeg_quality_max: int = 95
    h264_crf_min: int = 18
    h264_crf_max: int = 38
    h264_preset: str = EDGE_DEFAULT_X264_PRESET  # x264 preset of the H.264 round trips
    lr_cache_dir: str = ''  # reuse decoded LR sets across runs (e.g. train-sr -> finetune-sr)
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

    pools: List[torch.Tensor]  # each (N_i, H_i, W_i, 3) uint8, sides divisible by the scale
    weights: torch.Tensor  # sampling probability of each pool (proportional to N_i)
    val: np.ndarray  # (M, H, W, 3) uint8, or empty
    lr_pools: List[torch.Tensor] = field(default_factory=list)  # (N_i, V, h, w, 3) decoded LR
    val_lr_jpeg: Optional[np.ndarray] = None  # (M, h, w, 3) val LR through JPEG q50


def decoded_lr_pools(groups: Sequence[np.ndarray], cfg: object, device: torch.device,
                     label: str) -> List[torch.Tensor]:
    """Decoded LR variants of each HR group on `device` (empty when codec_variants is 0)."""
    if cfg.codec_variants <= 0:
        return []
    rng = codec_range_of(cfg)
    out = []
    for i, group in enumerate(groups):
        name = (f'lr_x{cfg.scale}_g{i}_{len(group)}x{group.shape[2]}x{group.shape[1]}'
                f'_v{cfg.codec_variants}_{"-".join(rng.codecs)}_q{rng.jpeg_quality[0]}-'
                f'{rng.jpeg_quality[1]}_crf{rng.h264_crf[0]}-{rng.h264_crf[1]}_{rng.h264_preset}'
                f'_s{cfg.seed}.npy')
        path = os.path.join(cfg.lr_cache_dir, name) if cfg.lr_cache_dir else ''
        t0 = time.perf_counter()

        def build(g: np.ndarray = group, seed: int = cfg.seed + i) -> np.ndarray:
            return build_lr_variants(g, cfg.scale, cfg.codec_variants, rng, seed=seed)

        lr = cached(path, build, label)
        print(f'{label}: {lr.shape[0]} frames x {lr.shape[1]} decoded LR variants '
              f'{lr.shape[3]}x{lr.shape[2]} ({time.perf_counter() - t0:.1f}s)', flush=True)
        out.append(common.to_device_stack(lr, device))
    return out


def val_jpeg_lr(val: np.ndarray, scale: int, quality: int = 50) -> Optional[np.ndarray]:
    """Val LR as the cloud receives it at JPEG `quality` (for PSNR on decoded input)."""
    if len(val) == 0:
        return None
    jpeg = CodecRange(('jpeg',), (quality, quality))
    return build_lr_variants(crop_to_scale(val, scale), scale, 1, jpeg)[:, 0]


def build_loaders(cfg: SRTrainConfig, device: torch.device) -> FramePools:
    """Decode HR frames once, make their decoded LR copies and move both to `device`."""
    frames = load_hr_frames(cfg.data, cfg.train_split, cfg.extra_frames, cfg.max_train_items)
    groups = [crop_to_scale(g, cfg.scale) for g in group_by_size(frames)]
    pools = [common.to_device_stack(g, device) for g in groups]
    weights = torch.tensor([float(len(g)) for g in groups])
    val = np.zeros((0, 1, 1, 3), np.uint8)
    if cfg.val_split:
        val = np.stack(load_frames(os.path.join(cfg.data, cfg.val_split),
                                   cfg.max_val_items or None))
    return FramePools(pools, weights / weights.sum(), val,
                      decoded_lr_pools(groups, cfg, device, 'train-sr'),
                      val_jpeg_lr(val, cfg.scale))


def sample_index(pools: FramePools) -> int:
    """Index of one frame stack, chosen in proportion to its size (every frame equally likely)."""
    if len(pools.pools) == 1:
        return 0
    return int(torch.multinomial(pools.weights, 1))


def sample_pool(pools: FramePools) -> torch.Tensor:
    """One frame stack, chosen in proportion to its size."""
    return pools.pools[sample_index(pools)]


def codec_batch(pools: FramePools, batch: int, lr_patch_hw: Tuple[int, int], scale: int,
                clean_prob: float, vertical_flips: bool = True
                ) -> Tuple[torch.Tensor, torch.Tensor]:
    """(LR, HR) float pairs whose LR is a decoded uplink frame (or clean, with `clean_prob`).

    Horizontal flips always; vertical flips and transposes only with `vertical_flips` (patch
    SR does not care which way is up, whole road scenes for the segmentation net do).
    """
    i = sample_index(pools)
    lr_u8, hr_u8 = paired_patches(pools.pools[i], pools.lr_pools[i], batch, lr_patch_hw, scale)
    lr_img, hr = dihedral_pair(to_float_nchw(lr_u8), to_float_nchw(hr_u8), vertical_flips)
    lr_img = mix_codec_lr(lr_img, hr, scale, clean_prob)
    return (lr_img.contiguous(memory_format=torch.channels_last),
            hr.contiguous(memory_format=torch.channels_last))


def train_step(forward, optimizer: torch.optim.Optimizer, pools: FramePools,
               cfg: SRTrainConfig, device: torch.device) -> Dict[str, torch.Tensor]:
    """One optimiser step on random patches; returns {'loss', 'psnr'} tensors."""
    if pools.lr_pools:
        side = max(1, cfg.patch // cfg.scale)
        lr_img, hr = codec_batch(pools, cfg.batch_size, (side, side), cfg.scale,
                                 cfg.codec_clean_prob)
    else:
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
             batch: int = 16, bf16: bool = True,
             lr_decoded: Optional[np.ndarray] = None) -> Dict[str, float]:
    """Mean PSNR of SR and of bilinear upsampling over full frames (HR cropped to the scale).

    With `lr_decoded` (the frames' LR after a codec round trip) also `psnr_jpeg50` /
    `psnr_jpeg50_bilinear`: the same from what the cloud really receives.
    """
    if len(frames) == 0:
        return {}
    out: Dict[str, List[torch.Tensor]] = {}
    with common.eval_mode(model):
        for i in range(0, len(frames), batch):
            hr = to_float_nchw(torch.from_numpy(frames[i:i + batch]).to(device))
            hr = hr[..., :hr.shape[-2] // scale * scale, :hr.shape[-1] // scale * scale]
            inputs = {'': area_downsample(hr, scale)}
            if lr_decoded is not None:
                inputs['_jpeg50'] = to_float_nchw(
                    torch.from_numpy(lr_decoded[i:i + batch]).to(device))
            for suffix, lr_img in inputs.items():
                sr = super_resolve(model, lr_img, bf16)
                bil = torch.nn.functional.interpolate(lr_img, scale_factor=scale,
                                                      mode='bilinear', align_corners=False)
                out.setdefault('psnr' + suffix, []).append(psnr_torch(sr, hr))
                out.setdefault(f'psnr{suffix}_bilinear', []).append(
                    psnr_torch(torch.round(bil.clamp(0, 1) * 255) / 255, hr))
    return {k: float(torch.cat(v).mean()) for k, v in out.items()}


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
        lambda: evaluate(model, pools.val, cfg.scale, device, cfg.eval_batch, cfg.bf16,
                         pools.val_lr_jpeg),
        lambda st, m: save_checkpoint(out_dir, model, optimizer, st, m, cfg), 'train-sr')
    print(f'train-sr: done at step {state.step} in {state.elapsed_s:.0f}s; val PSNR '
          f'{metrics.get("psnr", float("nan")):.3f} dB (bilinear '
          f'{metrics.get("psnr_bilinear", float("nan")):.3f})', flush=True)
    return 0
