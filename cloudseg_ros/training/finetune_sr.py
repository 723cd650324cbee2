"""`cloudseg finetune-sr`: analytics-aware fine-tuning of a base SR net (CloudSeg section 3.2).

The segmentation net is frozen. For each batch of HR frames (large crops: the net must see
context), LR = area downsample; the loss is

    KL(softmax(seg(HR)) || softmax(seg(SR, pyramid={scale: LR}))) + lambda * L1(SR, HR)

where the SR frame is segmented exactly as the cloud does it (the received LR frame replaces
ICNet's own downsized input of the branch at that scale: pyramid reuse). LR is what the uplink
delivers: decoded JPEG/H.264 copies made once before training (`codec_data`, as in train-sr),
with a share `codec_clean_prob` of clean area-downsampled LR; the target is always the
segmentation of the clean HR frame, so the net learns to restore what the codec took away.
The KL term needs no labels. lambda keeps PSNR from collapsing: with `adaptive_lambda`, it
follows a dual-ascent rule
on the PSNR drop against the frozen base net on the same batch, holding the drop near
`max_psnr_drop_db` (a constraint instead of a hand-tuned weight; device time allows no sweep).
At the end the weights are blended back toward the base net until the drop on training frames
is at most `final_max_drop_db` (val drops ran above training drops).

    cloudseg finetune-sr --set scale=4 --set sr_checkpoint=out/sr_x4/last.pt \
        --set seg_checkpoint=models/seg_icnet.pt --out out/sr_x4_aware
"""
import copy
import math
import os
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from cloudseg_ros.core.codecs import EDGE_DEFAULT_X264_PRESET
from cloudseg_ros.core.metrics import RunningConfusion
from cloudseg_ros.inference.seg_models import load_seg_model
from cloudseg_ros.nets.checkpoint import load_checkpoint
from cloudseg_ros.nets.icnet import PYRAMID_FACTORS

from . import common
from .augment import area_downsample, random_patches, to_float_nchw
from .config import ConfigError, run_training_command, seed_everything
from .datasets import group_by_size, load_seg_split
from .losses import psnr_torch, seg_kl_loss
from .codec_data import crop_to_scale
from .train_sr import (FramePools, codec_batch, decoded_lr_pools, load_hr_frames, sample_pool,
                       save_checkpoint, super_resolve, val_jpeg_lr)


@dataclass
class FinetuneConfig:
    """Everything an analytics-aware fine-tuning run depends on."""

    data: str = '../shared/data/camvid11'
    train_split: str = 'train'  # HR frames (labels unused: the HR prediction is the target)
    extra_frames: str = ''  # comma-separated unlabeled image folders / videos
    max_train_items: int = 0
    val_split: str = 'val'  # labeled: val mIoU of seg(SR) is reported, never trained on
    max_val_items: int = 0
    scale: int = 4
    sr_checkpoint: str = ''  # base SR (train-sr output); required
    seg_checkpoint: str = 'models/seg_icnet.pt'  # frozen seg net: ours, or .pt / .pt2 + YAML
    crop_h: int = 360  # large crops (full CamVid frames by default); multiples of the scale
    crop_w: int = 480
    batch_size: int = 8
    steps: int = 5000
    time_budget_s: float = 0.0
    optimizer: str = 'adamw'
    lr: float = 4e-4
    weight_decay: float = 0.0
    schedule: str = 'cosine'
    warmup_frac: float = 0.05
    kl_weight: float = 1.0
    l1_weight: float = 1.0  # lambda (initial value when adaptive)
    adaptive_lambda: bool = True
    max_psnr_drop_db: float = 0.25  # target PSNR drop vs the base net (adaptive lambda)
    lambda_rate: float = 0.05  # dual-ascent step on log(lambda) per dB of excess drop
    # After training, blend the weights back toward the base net (w = base + a * (tuned - base),
    # largest a in BLEND_ALPHAS) until the PSNR drop on training frames is at most this; 0: off.
    # Val drops ran up to 0.06 dB above train drops (x4), hence a margin under 0.3 dB.
    final_max_drop_db: float = 0.2
    blend_frames: int = 64  # training frames used to measure that drop
    pyramid_reuse: bool = True
    codec_variants: int = 8  # decoded LR copies per frame (0: clean LR only)
    codec_clean_prob: float = 0.2
    codecs: Tuple[str, ...] = ('jpeg', 'h264')
    jpeg_quality_min: int = 30
    jpeg_quality_max: int = 95
    h264_crf_min: int = 18
    h264_crf_max: int = 38
    h264_preset: str = EDGE_DEFAULT_X264_PRESET  # x264 preset of the H.264 round trips
    lr_cache_dir: str = ''
    bf16: bool = True
    channels_last: bool = True
    log_every: int = 50
    eval_every: int = 500
    eval_batch: int = 8
    seed: int = 0
    half_weights: bool = False


def pyramid_for(lr_img: torch.Tensor, scale: int, enabled: bool = True
                ) -> Optional[Dict[int, torch.Tensor]]:
    """Return the pyramid entry for a received LR frame: {scale: LR} when ICNet has that branch."""
    if enabled and scale in PYRAMID_FACTORS:
        return {scale: lr_img}
    return None


def build_model(cfg: FinetuneConfig, device: torch.device):
    """(trainable SR, frozen copy of the base SR, frozen seg net), all on `device`."""
    if not cfg.sr_checkpoint:
        raise ConfigError('finetune-sr needs --set sr_checkpoint=PATH (a train-sr output)')
    sr, ckpt = load_checkpoint(cfg.sr_checkpoint, 'cpu')
    if sr.config.scale != cfg.scale:
        raise ConfigError(f'{cfg.sr_checkpoint} is x{sr.config.scale}, config says x{cfg.scale}')
    seg = load_seg_model(cfg.seg_checkpoint, 'cpu')  # ours, TorchScript or .pt2 + YAML
    base = copy.deepcopy(sr)
    for net in (base, seg):
        net.to(device).eval().requires_grad_(False)
        if cfg.channels_last:
            net.to(memory_format=torch.channels_last)
    sr.to(device).train()
    if cfg.channels_last:
        sr.to(memory_format=torch.channels_last)
    return sr, base, seg


def build_loaders(cfg: FinetuneConfig, device: torch.device):
    """(HR frame pools on the device, labeled val split in host memory)."""
    frames = load_hr_frames(cfg.data, cfg.train_split, cfg.extra_frames, cfg.max_train_items)
    groups = [crop_to_scale(g, cfg.scale) for g in group_by_size(frames)]
    weights = torch.tensor([float(len(g)) for g in groups])
    val = load_seg_split(cfg.data, cfg.val_split, 'camvid', cfg.max_val_items or None)
    pools = FramePools([common.to_device_stack(g, device) for g in groups],
                       weights / weights.sum(), np.zeros((0, 1, 1, 3), np.uint8),
                       decoded_lr_pools(groups, cfg, device, 'finetune-sr'),
                       val_jpeg_lr(crop_to_scale(val.images, cfg.scale), cfg.scale))
    return pools, val


def lr_hr_batch(pools: FramePools, cfg: FinetuneConfig) -> Tuple[torch.Tensor, torch.Tensor]:
    """(LR as received, clean HR) for one step: decoded uplink LR when the pools have it."""
    if not pools.lr_pools:
        hr = hr_batch(pools, cfg)
        return area_downsample(hr, cfg.scale), hr
    h, w = cfg.crop_h // cfg.scale, cfg.crop_w // cfg.scale
    return codec_batch(pools, cfg.batch_size, (h, w), cfg.scale, cfg.codec_clean_prob,
                       vertical_flips=False)


@dataclass
class Lambda:
    """The L1 weight, adapted in log space: grows while the PSNR drop exceeds its target."""

    value: float
    drop_ema: float = 0.0

    def update(self, drop_db: float, cfg: FinetuneConfig) -> None:
        """Dual ascent on the constraint drop <= max_psnr_drop_db (EMA-smoothed drop)."""
        self.drop_ema = 0.9 * self.drop_ema + 0.1 * drop_db
        step = cfg.lambda_rate * (self.drop_ema - cfg.max_psnr_drop_db) / 0.1
        self.value = float(min(1e4, max(0.1, self.value * math.exp(step))))


def hr_batch(pools: FramePools, cfg: FinetuneConfig) -> torch.Tensor:
    """Random large HR crops `(B, 3, h, w)` in [0, 1] with sides divisible by the scale."""
    h = cfg.crop_h - cfg.crop_h % cfg.scale
    w = cfg.crop_w - cfg.crop_w % cfg.scale
    hr = to_float_nchw(random_patches(sample_pool(pools), cfg.batch_size, (h, w)))
    hr = hr[..., :hr.shape[-2] // cfg.scale * cfg.scale, :hr.shape[-1] // cfg.scale * cfg.scale]
    # Horizontal flips only: road scenes are not symmetric under vertical flips.
    flip = torch.rand(hr.shape[0], device=hr.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), hr.flip(3), hr).contiguous(
        memory_format=torch.channels_last)


def train_step(sr_net: nn.Module, base: nn.Module, seg: nn.Module,
               optimizer: torch.optim.Optimizer, pools: FramePools, lam: Lambda,
               cfg: FinetuneConfig, device: torch.device) -> Dict[str, torch.Tensor]:
    """One step of KL + lambda * L1; updates lambda from the batch's PSNR drop."""
    lr_img, hr = lr_hr_batch(pools, cfg)
    pyramid = pyramid_for(lr_img, cfg.scale, cfg.pyramid_reuse)
    with torch.no_grad(), common.autocast(device, cfg.bf16):
        target = seg(hr)
        base_sr = base(lr_img)
    with common.autocast(device, cfg.bf16):
        sr = sr_net(lr_img)
        logits = seg(sr, pyramid)
    kl = seg_kl_loss(logits, target)
    l1 = (sr.float() - hr).abs().mean()
    loss = cfg.kl_weight * kl + lam.value * l1
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    drop = (psnr_torch(base_sr.detach(), hr) - psnr_torch(sr.detach(), hr)).mean()
    if cfg.adaptive_lambda:
        lam.update(float(drop), cfg)  # one sync per step; negligible next to two ICNet passes
    return {'loss': loss, 'kl': kl, 'l1': l1, 'psnr_drop': drop,
            'lambda': torch.tensor(lam.value)}


@torch.no_grad()
def evaluate(sr_net: nn.Module, base: nn.Module, seg: nn.Module, val, cfg: FinetuneConfig,
             device: torch.device, lr_jpeg: Optional[np.ndarray] = None) -> Dict[str, float]:
    """Val mIoU of seg(SR) (with pyramid reuse) and PSNR of SR and base SR vs HR.

    From clean LR: `miou`, `psnr`, `psnr_base`, `psnr_drop`; with `lr_jpeg` (val LR after
    JPEG q50) the same with the suffix `_jpeg50`.
    """
    val_hr = crop_to_scale(val.images, cfg.scale)
    labels = val.labels[:, :val_hr.shape[1], :val_hr.shape[2]]
    inputs = {'': None} if lr_jpeg is None else {'': None, '_jpeg50': lr_jpeg}
    out: Dict[str, float] = {}
    for suffix, lr_all in inputs.items():
        conf = RunningConfusion(val.num_classes, val.ignore_index)
        psnr, psnr_base = [], []
        with common.eval_mode(sr_net):
            for i in range(0, len(val_hr), cfg.eval_batch):
                hr = to_float_nchw(torch.from_numpy(val_hr[i:i + cfg.eval_batch]).to(device))
                lr_img = (area_downsample(hr, cfg.scale) if lr_all is None else to_float_nchw(
                    torch.from_numpy(lr_all[i:i + cfg.eval_batch]).to(device)))
                sr = super_resolve(sr_net, lr_img, cfg.bf16)
                psnr.append(psnr_torch(sr, hr))
                psnr_base.append(psnr_torch(super_resolve(base, lr_img, cfg.bf16), hr))
                with common.autocast(device, cfg.bf16):
                    pred = seg(sr, pyramid_for(lr_img, cfg.scale, cfg.pyramid_reuse)).argmax(1)
                if seg.num_classes == val.num_classes:  # labels only fit a net of their classes
                    conf.update(pred.to(torch.uint8).cpu().numpy(),
                                labels[i:i + cfg.eval_batch])
        p, pb = float(torch.cat(psnr).mean()), float(torch.cat(psnr_base).mean())
        out.update({'miou' + suffix: conf.mean_iou(), 'psnr' + suffix: p,
                    'psnr_base' + suffix: pb, 'psnr_drop' + suffix: pb - p})
    return out


BLEND_ALPHAS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0)


@torch.no_grad()
def psnr_drop_db(sr_net: nn.Module, base: nn.Module, frames: torch.Tensor, scale: int,
                 batch: int = 8, bf16: bool = True) -> float:
    """Mean PSNR of base SR minus that of `sr_net` over uint8 frames `(N, H, W, 3)`."""
    drops = []
    with common.eval_mode(sr_net):
        for i in range(0, len(frames), batch):
            hr = to_float_nchw(frames[i:i + batch])
            hr = hr[..., :hr.shape[-2] // scale * scale, :hr.shape[-1] // scale * scale]
            lr_img = area_downsample(hr, scale)
            drops.append(psnr_torch(super_resolve(base, lr_img, bf16), hr)
                         - psnr_torch(super_resolve(sr_net, lr_img, bf16), hr))
    return float(torch.cat(drops).mean())


def blend_frames(pools: FramePools, count: int) -> torch.Tensor:
    """At most `count` evenly spaced frames of the largest pool (the blend's PSNR check)."""
    frames = pools.pools[0]
    step = max(1, -(-len(frames) // max(1, count)))  # ceil: never more than `count` frames
    return frames[::step][:max(1, count)]


@torch.no_grad()
def blend_to_psnr_budget(sr_net: nn.Module, base: nn.Module, frames: torch.Tensor, scale: int,
                         max_drop_db: float, bf16: bool = True,
                         label: str = 'finetune-sr') -> Dict[str, float]:
    """Move `sr_net` to base + a * (tuned - base) with the largest a meeting the PSNR budget.

    Weight-space interpolation between a fine-tuned net and its start trades the two
    objectives smoothly (WiSE-FT); measuring on training frames keeps val out of the choice.
    """
    tuned = {k: v.clone() for k, v in sr_net.state_dict().items()}
    start = base.state_dict()
    drop = float('nan')
    for alpha in BLEND_ALPHAS:
        sr_net.load_state_dict({k: start[k] + alpha * (v - start[k]) if v.is_floating_point()
                                else v for k, v in tuned.items()})
        drop = psnr_drop_db(sr_net, base, frames, scale, bf16=bf16)
        if drop <= max_drop_db:
            break
    print(f'{label}: blend alpha {alpha:g}: train PSNR drop {drop:.3f} dB '
          f'(budget {max_drop_db:g})', flush=True)
    return {'blend_alpha': alpha, 'train_psnr_drop': drop}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse arguments, fine-tune, and leave last.pt / best.pt in --out."""
    return run_training_command('finetune-sr', __doc__, FinetuneConfig, 'out/sr_aware', run, argv)


def run(cfg: FinetuneConfig, out_dir: str, device: torch.device, resume: bool) -> int:
    """Build, optionally resume, fine-tune and report; returns the exit code."""
    seed_everything(cfg.seed)
    common.setup_backend(device)
    sr_net, base, seg = build_model(cfg, device)
    if resume:
        resumed, _ = load_checkpoint(os.path.join(out_dir, common.LAST_FILE), device)
        sr_net.load_state_dict(resumed.state_dict())
    pools, val = build_loaders(cfg, device)
    optimizer = common.build_optimizer(sr_net.parameters(), cfg.optimizer, cfg.lr,
                                       cfg.weight_decay)
    state = common.load_train_state(out_dir, optimizer) if resume else common.LoopState()
    lam = Lambda(float(state.extra.get('lambda', cfg.l1_weight)))
    print(f'finetune-sr: x{cfg.scale} from {cfg.sr_checkpoint}, seg {cfg.seg_checkpoint}, '
          f'lambda {lam.value:g}, device {device}, from step {state.step}', flush=True)

    def checkpoint(st: common.LoopState, metrics: Dict[str, float]) -> None:
        st.extra['lambda'] = lam.value
        save_checkpoint(out_dir, sr_net, optimizer, st, metrics, cfg, metric='miou')

    spec = common.LoopSpec(cfg.steps, cfg.time_budget_s, cfg.log_every, cfg.eval_every, cfg.lr,
                           cfg.schedule, cfg.warmup_frac)
    metrics = common.run_loop(
        spec, state, optimizer,
        lambda step: train_step(sr_net, base, seg, optimizer, pools, lam, cfg, device),
        lambda: evaluate(sr_net, base, seg, val, cfg, device, pools.val_lr_jpeg), checkpoint,
        'finetune-sr')
    if cfg.final_max_drop_db > 0:
        frames = blend_frames(pools, cfg.blend_frames)
        blend = blend_to_psnr_budget(sr_net, base, frames, cfg.scale, cfg.final_max_drop_db,
                                     cfg.bf16)
        if blend['blend_alpha'] < 1.0:
            metrics = {**evaluate(sr_net, base, seg, val, cfg, device, pools.val_lr_jpeg),
                       **blend}
            checkpoint(state, metrics)
    print(f'finetune-sr: done at step {state.step} in {state.elapsed_s:.0f}s; val mIoU '
          f'{metrics.get("miou", float("nan")):.4f}, PSNR drop '
          f'{metrics.get("psnr_drop", float("nan")):.3f} dB, lambda {lam.value:g}', flush=True)
    return 0
