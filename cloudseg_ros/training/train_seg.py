"""`cloudseg train-seg`: train the ICNet-style segmentation net on HR frames from scratch.

The whole train split lives on the device as uint8; each step draws a batch, augments it there
(random scale, crop, flip, colour jitter), and runs a bf16 forward/backward with the ICNet cascade
loss. Validation mIoU (full frames, `core.metrics`) is computed every `eval_every` steps and the
best checkpoint is kept.

Robustness to what the uplink does (`degrade_variants` > 0): every training frame also has
degraded copies made once on the CPU (`codec_data.build_degraded_views`: down/up resampling
x1..x4 with random filters, JPEG q 30..95 or H.264 CRF 18..38 round trips), plus blur and noise
on the device. Each sample is seen as a clean and a degraded view with the same crop and colour;
both get the label loss and a consistency term KL(p_clean || p_degraded) ties the degraded
prediction to the clean one, so a codec change does not flip classes.

Model selection on a drive never trained on: `holdout_sequences` (e.g. 0006R0) removes those
drives from the training split and scores them every evaluation (`holdout_miou`), which then
picks `best.pt`. `agree_jpeg50` is the agreement mIoU between the prediction on the val frames
and on their JPEG q50 copies.

Architecture: the ICNet of `nets/icnet.py` (what the cloud serves, with pyramid reuse), or
`arch=fcdensenet` (`nets/fcdensenet.py`, FC-DenseNet56/67/103 by `dense_preset`) to compare
another from-scratch design on the held-out drives; no auxiliary heads, no pyramid reuse.

A new camera without labels (`unlabeled` = a video or image folder): its frames join every batch
as clean + degraded views with void labels, so only the consistency term sees them
(`seg_unlabeled`); held-out frames of that camera score `unlabeled_agree_jpeg50`.

    cloudseg train-seg --set data=../shared/data/camvid11 --set time_budget_s=420 --out out/seg
"""
import os
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from cloudseg_ros.core.codecs import EDGE_DEFAULT_X264_PRESET
from cloudseg_ros.core.metrics import RunningConfusion
from cloudseg_ros.nets.checkpoint import build_model as build_net
from cloudseg_ros.nets.checkpoint import load_checkpoint, save_checkpoint as save_net
from cloudseg_ros.nets.fcdensenet import PRESETS as DENSE_PRESETS, fcdensenet_config
from cloudseg_ros.nets.icnet import HEAD_STRIDES

from . import common
from .augment import (blur_and_noise, color_cast, cutmix, seg_augment, seg_augment_views,
                      to_float_nchw)
from .codec_data import build_degraded_views, codec_range_of, jpeg_round_trip
from .config import ConfigError, config_dict, run_training_command, seed_everything
from .datasets import SegSplit, load_seg_split, split_by_sequence
from .losses import cascade_ce_loss, class_weights, seg_kl_loss
from .seg_unlabeled import UnlabeledData, load_unlabeled, unlabeled_batch
from .style_aug import MixStyle, mixstyle_layers, random_convolution


@dataclass
class SegTrainConfig:
    """Everything a segmentation run depends on (stored in the checkpoint)."""

    data: str = '../shared/data/camvid11'  # dataset root
    dataset: str = 'camvid'  # camvid | cityscapes
    train_split: str = 'train'
    val_split: str = 'val'
    max_train_items: int = 0  # 0: the whole split (small values for smoke tests)
    max_val_items: int = 0
    arch: str = 'icnet'  # icnet | fcdensenet (FC-DenseNet, no pyramid reuse; see nets/)
    dense_preset: str = '103'  # fcdensenet layout: 56 | 67 | 103 (Jegou et al.)
    dense_dropout: float = 0.2  # fcdensenet dropout after every conv
    width: int = 32  # ICNetConfig.width (32 = the shipped default, ~30 ms/frame on 2 CPU cores)
    stem_blocks: int = 1
    low_blocks: int = 2
    dropout: float = 0.1
    head_stride: int = 8  # ICNetConfig.head_stride: 8, or 4 for thin classes (pole, sign)
    crop_h: int = 352  # training crop; eval runs on full frames
    crop_w: int = 480
    scale_min: float = 0.5  # random zoom range
    scale_max: float = 2.0
    flip: bool = True
    jitter: float = 0.3  # brightness / contrast / saturation factor range 1 +- jitter
    channel_gain: float = 0.0  # per-channel (white balance) gain range 1 +- channel_gain
    gamma: float = 0.0  # tone curve x ** g, log g ~ U(-gamma, gamma)
    cutmix_prob: float = 0.0  # labelled samples that get a box of another sample pasted in
    randconv_prob: float = 0.0  # samples whose views go through a random convolution (style_aug)
    mixstyle_prob: float = 0.0  # batches whose early features get another sample's statistics
    batch_size: int = 16
    steps: int = 20000
    time_budget_s: float = 0.0  # stop (with the LR schedule compressed to fit) after this; 0: off
    optimizer: str = 'adamw'  # adamw | sgd
    lr: float = 2e-3
    weight_decay: float = 1e-4
    schedule: str = 'poly'  # poly | cosine | constant
    warmup_frac: float = 0.02
    aux_weights: Tuple[float, ...] = (0.16, 0.4, 0.4)  # coarse -> fine aux heads (1/16, 1/8, 1/4)
    class_weighting: str = 'enet'  # none | enet | median
    bf16: bool = True  # autocast on CUDA (ignored on CPU)
    channels_last: bool = True
    compile: bool = False  # torch.compile the training forward (CUDA only)
    log_every: int = 50
    eval_every: int = 500
    eval_batch: int = 16
    seed: int = 0
    half_weights: bool = False  # store float16 weights in checkpoints
    holdout_sequences: str = ''  # comma-separated drives left out of training, used to select
    degrade_variants: int = 6  # degraded copies per training frame (0: clean training only)
    degrade_scale_probs: Tuple[float, ...] = (0.4, 0.2, 0.2, 0.2)  # of x1, x2, x3, x4
    codecs: Tuple[str, ...] = ('jpeg', 'h264')
    jpeg_quality_min: int = 30
    jpeg_quality_max: int = 95
    h264_crf_min: int = 18
    h264_crf_max: int = 38
    h264_preset: str = EDGE_DEFAULT_X264_PRESET  # x264 preset of the H.264 round trips
    blur_prob: float = 0.2  # of the degraded view
    max_blur_sigma: float = 1.5
    noise_prob: float = 0.2
    max_noise: float = 0.03  # noise std on [0, 1] pixels
    consistency_weight: float = 1.0  # KL(p_clean || p_degraded)
    degraded_ce_weight: float = 1.0  # label CE of the degraded view, relative to the clean one
    ema_decay: float = 0.999  # >0: evaluate and save an exponential moving average (0: off)
    unlabeled: str = ''  # video / image folder of a target camera: consistency-only frames
    unlabeled_max_frames: int = 0  # 0: all
    unlabeled_train_frac: float = 0.7  # first part trains, the rest scores unlabeled_agree_jpeg50
    unlabeled_variants: int = 4  # degraded views per unlabeled frame
    unlabeled_batch: int = 8  # unlabeled frames per step (each as a clean + a degraded view)
    unlabeled_weight: float = 1.0  # weight of their consistency term
    unlabeled_scale_min: float = 0.5  # zoom range of their crops (1 = the camera's own pixels)
    unlabeled_scale_max: float = 1.5


def build_model(cfg: SegTrainConfig, num_classes: int) -> nn.Module:
    """Build the config's network (`arch`) for `num_classes` classes."""
    if cfg.arch == 'fcdensenet':
        return build_net('fcdensenet', fcdensenet_config(cfg.dense_preset, num_classes,
                                                         cfg.dense_dropout))
    return build_net('icnet', {'num_classes': num_classes, 'width': cfg.width,
                               'stem_blocks': cfg.stem_blocks, 'low_blocks': cfg.low_blocks,
                               'dropout': cfg.dropout, 'head_stride': cfg.head_stride})


@dataclass
class SegData:
    """Train split on the device (uint8) plus the val split in host memory."""

    images: torch.Tensor  # (N, H, W, 3) uint8 on device
    labels: torch.Tensor  # (N, H, W) uint8 on device
    val: SegSplit
    class_names: List[str]
    ignore_index: int
    class_weights: Optional[torch.Tensor]
    degraded: Optional[torch.Tensor] = None  # (N, V, H, W, 3) uint8 on device
    holdout: Optional[SegSplit] = None  # drives left out of training
    val_jpeg50: Optional[np.ndarray] = None  # val frames after a JPEG q50 round trip
    unlabeled: Optional[UnlabeledData] = None  # a target camera's frames (consistency only)


def _degraded_views(train: SegSplit, cfg: SegTrainConfig) -> np.ndarray:
    t0 = time.perf_counter()
    views = build_degraded_views(train.images, cfg.degrade_variants, codec_range_of(cfg),
                                 scale_probs=cfg.degrade_scale_probs, seed=cfg.seed)
    print(f'train-seg: {cfg.degrade_variants} degraded views per frame '
          f'({time.perf_counter() - t0:.1f}s)', flush=True)
    return views


ARCHS = ('icnet', 'fcdensenet')
# Ranges of the drive-generalisation and regularisation options: name -> (low, high), both
# inclusive.
AUGMENT_RANGES = {'cutmix_prob': (0.0, 1.0), 'channel_gain': (0.0, 0.9), 'gamma': (0.0, 2.0),
                  'degraded_ce_weight': (0.0, 4.0), 'randconv_prob': (0.0, 1.0),
                  'mixstyle_prob': (0.0, 1.0), 'dense_dropout': (0.0, 0.9)}


def check_augment(cfg: SegTrainConfig) -> None:
    """ConfigError for a model or augmentation option outside its range (before any data is
    loaded)."""
    if cfg.arch not in ARCHS:
        raise ConfigError(f'arch must be one of {ARCHS}, got {cfg.arch!r}')
    if cfg.arch == 'fcdensenet' and cfg.dense_preset not in DENSE_PRESETS:
        raise ConfigError(f'dense_preset must be one of {sorted(DENSE_PRESETS)}, '
                          f'got {cfg.dense_preset!r}')
    if cfg.arch != 'icnet' and cfg.mixstyle_prob > 0:
        raise ConfigError('mixstyle_prob hooks ICNet layers; use it with arch=icnet')
    if cfg.head_stride not in HEAD_STRIDES:
        raise ConfigError(f'head_stride must be one of {HEAD_STRIDES}, got {cfg.head_stride}')
    for name, (low, high) in AUGMENT_RANGES.items():
        value = getattr(cfg, name)
        if not low <= value <= high:
            raise ConfigError(f'{name} must be in [{low:g}, {high:g}], got {value:g}')


def build_loaders(cfg: SegTrainConfig, device: torch.device) -> SegData:
    """Decode both splits once; move the train split (and its degraded views) to `device`."""
    train = load_seg_split(cfg.data, cfg.train_split, cfg.dataset, cfg.max_train_items or None)
    val = load_seg_split(cfg.data, cfg.val_split, cfg.dataset, cfg.max_val_items or None)
    holdout = None
    if cfg.holdout_sequences.strip():
        train, holdout = split_by_sequence(train, cfg.data, cfg.holdout_sequences.split(','))
    weights = None
    if cfg.class_weighting != 'none':
        w = class_weights(train.labels, train.num_classes, train.ignore_index,
                          cfg.class_weighting)
        weights = torch.from_numpy(w).to(device)
    print(f'train-seg: {len(train)} train / {len(val)} val'
          + (f' / {len(holdout)} held-out ({cfg.holdout_sequences})' if holdout else '')
          + f' frames {train.images.shape[2]}x{train.images.shape[1]}, '
          f'{train.num_classes} classes', flush=True)
    degraded = None
    if cfg.degrade_variants > 0:
        degraded = common.to_device_stack(_degraded_views(train, cfg), device)
    jpeg50 = np.stack([jpeg_round_trip(img, 50) for img in val.images])
    unlabeled = None
    if cfg.unlabeled:
        if cfg.degrade_variants < 1:
            raise ConfigError('unlabeled frames need degrade_variants >= 1 (they only enter '
                              'through the consistency term between clean and degraded views)')
        unlabeled = load_unlabeled(cfg.unlabeled, cfg.unlabeled_train_frac,
                                   cfg.unlabeled_variants, codec_range_of(cfg), device,
                                   cfg.unlabeled_max_frames, cfg.seed)
    return SegData(common.to_device_stack(train.images, device),
                   common.to_device_stack(train.labels, device), val, train.class_names,
                   train.ignore_index, weights, degraded, holdout, jpeg50, unlabeled)


def _augmented_views(images: torch.Tensor, degraded: torch.Tensor, labels: torch.Tensor,
                     scale_range: Tuple[float, float], cfg: SegTrainConfig, ignore_index: int,
                     mix: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """(clean and degraded views stacked `(2B, 3, h, w)`, labels `(2B, h, w)`).

    `mix`: CutMix the labelled batch (`cutmix_prob`); unlabeled frames are never mixed.
    """
    clean, degraded, y = seg_augment_views(
        images, degraded, labels, (cfg.crop_h, cfg.crop_w), scale_range, cfg.flip,
        (cfg.jitter,) * 3, ignore_index)
    if cfg.channel_gain > 0 or cfg.gamma > 0:
        clean, degraded = color_cast(torch.stack([clean, degraded], 1), cfg.channel_gain,
                                     cfg.gamma).unbind(1)
    if cfg.randconv_prob > 0:
        clean, degraded = random_convolution(torch.stack([clean, degraded], 1),
                                             cfg.randconv_prob).unbind(1)
    if mix:
        (clean, degraded), y = cutmix([clean, degraded], y, cfg.cutmix_prob)
    degraded = blur_and_noise(degraded, cfg.blur_prob, cfg.max_blur_sigma, cfg.noise_prob,
                              cfg.max_noise)
    clean = clean.contiguous(memory_format=torch.channels_last)
    return torch.cat([clean, degraded]), torch.cat([y, y])


def _views_batch(data: SegData, idx: torch.Tensor, cfg: SegTrainConfig
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Labelled clean + degraded views, then (with `unlabeled`) the unlabeled ones."""
    var = torch.randint(0, data.degraded.shape[1], (idx.shape[0],), device=idx.device)
    x, y = _augmented_views(data.images[idx], data.degraded[idx, var], data.labels[idx],
                            (cfg.scale_min, cfg.scale_max), cfg, data.ignore_index, mix=True)
    if data.unlabeled is None:
        return x, y
    ux, uy = _augmented_views(
        *unlabeled_batch(data.unlabeled, cfg.unlabeled_batch, data.ignore_index),
        (cfg.unlabeled_scale_min, cfg.unlabeled_scale_max), cfg, data.ignore_index)
    return torch.cat([x, ux]), torch.cat([y, uy])


def _consistency(logits: torch.Tensor, batch: int, cfg: SegTrainConfig) -> torch.Tensor:
    """Weighted KL(p_clean || p_degraded) of the labelled and the unlabeled view pairs.

    `logits` rows: labelled clean (batch), labelled degraded (batch), then unlabeled clean and
    degraded (cfg.unlabeled_batch each) when present; the clean side is detached.
    """
    clean, degraded = logits[:2 * batch].chunk(2)
    loss = cfg.consistency_weight * seg_kl_loss(degraded, clean)
    if logits.shape[0] > 2 * batch and cfg.unlabeled_weight > 0:
        u_clean, u_degraded = logits[2 * batch:].chunk(2)
        loss = loss + cfg.unlabeled_weight * seg_kl_loss(u_degraded, u_clean)
    return loss


def label_loss(logits: torch.Tensor, aux: List[torch.Tensor], y: torch.Tensor, data: SegData,
               cfg: SegTrainConfig, batch: int) -> torch.Tensor:
    """Cascade CE against the labels; the degraded views weighted by `degraded_ce_weight`.

    Rows are the labelled clean views, the labelled degraded views, then unlabeled views (void
    labels, no CE). A thin pole or sign that the x3/x4 round trip wiped out is still labelled in
    the degraded view, so its CE teaches the net to under-predict thin classes everywhere;
    a weight below 1 leaves those views to the consistency term. At 1 this is one CE over the
    batch, as before (both halves have the same labels, so the mean is the average of the two).
    """
    def ce(rows: slice) -> torch.Tensor:
        return cascade_ce_loss(logits[rows], [a[rows] for a in aux], y[rows], cfg.aux_weights,
                               data.ignore_index, data.class_weights)

    weight = cfg.degraded_ce_weight
    if data.degraded is None or weight == 1.0:
        return ce(slice(None))
    clean = ce(slice(0, batch))
    if weight == 0.0:
        return clean
    return (clean + weight * ce(slice(batch, 2 * batch))) / (1.0 + weight)


def _row_blocks(data: SegData, cfg: SegTrainConfig) -> List[Tuple[int, int]]:
    """The batch layout as MixStyle's (samples, views) blocks (see `_views_batch`)."""
    if data.degraded is None:
        return [(cfg.batch_size, 1)]
    blocks = [(cfg.batch_size, 2)]
    if data.unlabeled is not None:
        blocks.append((cfg.unlabeled_batch, 2))
    return blocks


def train_step(forward_train, model: nn.Module, optimizer: torch.optim.Optimizer,
               data: SegData, cfg: SegTrainConfig, device: torch.device,
               generator: Optional[torch.Generator] = None,
               mixer: Optional[MixStyle] = None) -> Dict[str, torch.Tensor]:
    """One optimiser step on a freshly augmented batch; returns {'loss': tensor}.

    `mixer`: MixStyle hooks on the model, told the batch layout before the forward.
    """
    idx = torch.randint(0, data.images.shape[0], (cfg.batch_size,), device=device,
                        generator=generator)
    if data.degraded is not None:
        x, y = _views_batch(data, idx, cfg)
    else:
        x, y = seg_augment(data.images[idx], data.labels[idx], (cfg.crop_h, cfg.crop_w),
                           (cfg.scale_min, cfg.scale_max), cfg.flip, (cfg.jitter,) * 3,
                           data.ignore_index, generator)
        if cfg.channel_gain > 0 or cfg.gamma > 0:
            x = color_cast(x, cfg.channel_gain, cfg.gamma, generator)
        if cfg.randconv_prob > 0:
            x = random_convolution(x.unsqueeze(1), cfg.randconv_prob, generator=generator)[:, 0]
        (x,), y = cutmix([x], y, cfg.cutmix_prob, generator)
        x = x.contiguous(memory_format=torch.channels_last)
    if not cfg.channels_last:
        x = x.contiguous()
    if mixer is not None:
        mixer.next_batch(_row_blocks(data, cfg), device)
    with common.autocast(device, cfg.bf16):
        logits, aux = forward_train(x)
    loss = label_loss(logits, aux, y, data, cfg, idx.shape[0])
    out = {'ce': loss.detach()}
    if data.degraded is not None and (cfg.consistency_weight > 0 or data.unlabeled is not None):
        consistency = _consistency(logits, idx.shape[0], cfg)
        loss = loss + consistency
        out['kl'] = consistency.detach()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    out['loss'] = loss.detach()
    return out


@torch.no_grad()
def predict(model: nn.Module, images: np.ndarray, device: torch.device, batch: int = 16,
            bf16: bool = True) -> np.ndarray:
    """Argmax class ids `(N, H, W)` uint8 for uint8 RGB frames `(N, H, W, 3)`."""
    out = []
    with common.eval_mode(model):
        for i in range(0, len(images), batch):
            x = to_float_nchw(torch.from_numpy(images[i:i + batch]).to(device))
            with common.autocast(device, bf16):
                logits = model(x)
            out.append(logits.argmax(1).to(torch.uint8).cpu().numpy())
    return np.concatenate(out)


def evaluate(model: nn.Module, split: SegSplit, device: torch.device, batch: int = 16,
             bf16: bool = True) -> Dict[str, object]:
    """mIoU, pixel accuracy and per-class IoU on a labeled split (full frames)."""
    conf = RunningConfusion(split.num_classes, split.ignore_index)
    conf.update(predict(model, split.images, device, batch, bf16), split.labels)
    ious = conf.class_iou()
    return {'miou': conf.mean_iou(), 'pixel_acc': conf.pixel_accuracy(),
            'per_class_iou': {n: (None if np.isnan(v) else float(v))
                              for n, v in zip(split.class_names, ious)}}


def agreement_miou(model: nn.Module, clean: np.ndarray, degraded: np.ndarray,
                   num_classes: int, device: torch.device, batch: int = 16,
                   bf16: bool = True) -> float:
    """mIoU of the prediction on `degraded` frames scored against that on the `clean` ones."""
    conf = RunningConfusion(num_classes, None)
    conf.update(predict(model, degraded, device, batch, bf16),
                predict(model, clean, device, batch, bf16))
    return conf.mean_iou()


def evaluate_all(model: nn.Module, data: SegData, cfg: SegTrainConfig,
                 device: torch.device) -> Dict[str, object]:
    """Val metrics, plus `holdout_*` on the held-out drives and `agree_jpeg50` on val."""
    metrics = evaluate(model, data.val, device, cfg.eval_batch, cfg.bf16)
    if data.holdout is not None and len(data.holdout):
        held = evaluate(model, data.holdout, device, cfg.eval_batch, cfg.bf16)
        metrics.update({'holdout_' + k: v for k, v in held.items()})
    if data.val_jpeg50 is not None:
        metrics['agree_jpeg50'] = agreement_miou(model, data.val.images, data.val_jpeg50,
                                                 len(data.class_names), device,
                                                 cfg.eval_batch, cfg.bf16)
    if data.unlabeled is not None and len(data.unlabeled.eval_clean):
        metrics['unlabeled_agree_jpeg50'] = agreement_miou(
            model, data.unlabeled.eval_clean, data.unlabeled.eval_jpeg50,
            len(data.class_names), device, max(1, cfg.eval_batch // 4), cfg.bf16)
    return metrics


def save_checkpoint(out_dir: str, model: nn.Module, optimizer: torch.optim.Optimizer,
                    state: common.LoopState, metrics: Dict[str, object],
                    cfg: SegTrainConfig) -> None:
    """last.pt + train_state.pt every time; best.pt when held-out (else val) mIoU improved."""
    os.makedirs(out_dir, exist_ok=True)
    train_cfg = config_dict(cfg)
    save_net(os.path.join(out_dir, common.LAST_FILE), model, cfg.arch, None, state.step,
             metrics, train_cfg, cfg.half_weights)
    key = 'holdout_miou' if 'holdout_miou' in metrics else 'miou'
    miou = float(metrics.get(key, float('nan')))
    if miou == miou and miou > state.best:
        state.best = miou
        save_net(os.path.join(out_dir, common.BEST_FILE), model, cfg.arch, None, state.step,
                 metrics, train_cfg, cfg.half_weights)
    common.save_train_state(out_dir, optimizer, state)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse arguments, train, and leave last.pt / best.pt in --out."""
    return run_training_command('train-seg', __doc__, SegTrainConfig, 'out/seg', run, argv)


def run(cfg: SegTrainConfig, out_dir: str, device: torch.device, resume: bool) -> int:
    """Build, optionally resume, train and report; returns the exit code."""
    seed_everything(cfg.seed)
    common.setup_backend(device)
    check_augment(cfg)
    data = build_loaders(cfg, device)
    model = build_model(cfg, len(data.class_names))
    state = common.LoopState()
    if resume:
        model, _ = load_checkpoint(os.path.join(out_dir, common.LAST_FILE), 'cpu')
    model.to(device).train()
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = common.build_optimizer(model.parameters(), cfg.optimizer, cfg.lr,
                                       cfg.weight_decay)
    if resume:
        state = common.load_train_state(out_dir, optimizer)
        print(f'train-seg: resumed at step {state.step}', flush=True)
    name = (f'FC-DenseNet{cfg.dense_preset}' if cfg.arch == 'fcdensenet'
            else f'ICNet width {cfg.width}')
    print(f'train-seg: {name}, '
          f'{common.parameter_count(model) / 1e6:.2f} M parameters, device {device}', flush=True)
    forward_train = common.maybe_compile(model.forward_train, cfg.compile, device)
    ema = common.WeightAverage(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    scored = ema.model if ema is not None else model  # what is evaluated and saved
    # Hooked after the EMA copy: only the trained net mixes styles (and only in train mode).
    mixer = (MixStyle(mixstyle_layers(model), cfg.mixstyle_prob) if cfg.mixstyle_prob > 0
             else None)

    def step_fn(step: int) -> Dict[str, torch.Tensor]:
        out = train_step(forward_train, model, optimizer, data, cfg, device, mixer=mixer)
        if ema is not None:
            ema.update()
        return out

    spec = common.LoopSpec(cfg.steps, cfg.time_budget_s, cfg.log_every, cfg.eval_every, cfg.lr,
                           cfg.schedule, cfg.warmup_frac)
    metrics = common.run_loop(
        spec, state, optimizer, step_fn,
        lambda: evaluate_all(scored, data, cfg, device),
        lambda st, m: save_checkpoint(out_dir, scored, optimizer, st, m, cfg), 'train-seg')
    held = metrics.get('holdout_miou')
    print(f'train-seg: done at step {state.step} in {state.elapsed_s:.0f}s; last val mIoU '
          f'{metrics.get("miou", float("nan")):.4f}'
          + (f', held-out mIoU {held:.4f}' if held is not None else '')
          + f', best {state.best:.4f}', flush=True)
    for prefix, name in (('', 'val'), ('holdout_', 'held-out')):
        if prefix + 'per_class_iou' in metrics:
            print(f'train-seg: {name} IoU per class: '
                  + format_class_ious(metrics[prefix + 'per_class_iou']), flush=True)
    return 0


def format_class_ious(ious: Dict[str, Optional[float]]) -> str:
    """'sky 0.93, pole 0.05, ...' (thin classes are where recipes differ most)."""
    return ', '.join(f'{n} ' + ('-' if v is None else f'{v:.2f}') for n, v in ious.items())
