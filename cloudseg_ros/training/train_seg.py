"""`cloudseg train-seg`: train the ICNet-style segmentation net on HR frames from scratch.

The whole train split lives on the device as uint8; each step draws a batch, augments it there
(random scale, crop, flip, colour jitter), and runs a bf16 forward/backward with the ICNet cascade
loss. Validation mIoU (full frames, `core.metrics`) is computed every `eval_every` steps and the
best checkpoint is kept.

    cloudseg train-seg --set data=../shared/data/camvid11 --set time_budget_s=420 --out out/seg
"""
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from cloudseg_ros.core.metrics import RunningConfusion
from cloudseg_ros.nets.checkpoint import build_model as build_net
from cloudseg_ros.nets.checkpoint import load_checkpoint, save_checkpoint as save_net
from cloudseg_ros.nets.icnet import ICNet

from . import common
from .augment import seg_augment, to_float_nchw
from .config import config_dict, run_training_command, seed_everything
from .datasets import SegSplit, load_seg_split
from .losses import cascade_ce_loss, class_weights


@dataclass
class SegTrainConfig:
    """Everything a segmentation run depends on (stored in the checkpoint)."""

    data: str = '../shared/data/camvid11'  # dataset root
    dataset: str = 'camvid'  # camvid | cityscapes
    train_split: str = 'train'
    val_split: str = 'val'
    max_train_items: int = 0  # 0: the whole split (small values for smoke tests)
    max_val_items: int = 0
    width: int = 32  # ICNetConfig.width (32 = the shipped default, ~30 ms/frame on 2 CPU cores)
    stem_blocks: int = 1
    low_blocks: int = 2
    dropout: float = 0.1
    crop_h: int = 352  # training crop; eval runs on full frames
    crop_w: int = 480
    scale_min: float = 0.5  # random zoom range
    scale_max: float = 2.0
    flip: bool = True
    jitter: float = 0.3  # brightness / contrast / saturation factor range 1 +- jitter
    batch_size: int = 16
    steps: int = 20000
    time_budget_s: float = 0.0  # stop (with the LR schedule compressed to fit) after this; 0: off
    optimizer: str = 'adamw'  # adamw | sgd
    lr: float = 2e-3
    weight_decay: float = 1e-4
    schedule: str = 'poly'  # poly | cosine | constant
    warmup_frac: float = 0.02
    aux_weights: Tuple[float, ...] = (0.16, 0.4)  # coarse -> fine aux heads (ICNet)
    class_weighting: str = 'enet'  # none | enet | median
    bf16: bool = True  # autocast on CUDA (ignored on CPU)
    channels_last: bool = True
    compile: bool = False  # torch.compile the training forward (CUDA only)
    log_every: int = 50
    eval_every: int = 500
    eval_batch: int = 16
    seed: int = 0
    half_weights: bool = False  # store float16 weights in checkpoints


def build_model(cfg: SegTrainConfig, num_classes: int) -> ICNet:
    """Build an ICNet with the config's width and depth for `num_classes` classes."""
    return build_net('icnet', {'num_classes': num_classes, 'width': cfg.width,
                               'stem_blocks': cfg.stem_blocks, 'low_blocks': cfg.low_blocks,
                               'dropout': cfg.dropout})


@dataclass
class SegData:
    """Train split on the device (uint8) plus the val split in host memory."""

    images: torch.Tensor  # (N, H, W, 3) uint8 on device
    labels: torch.Tensor  # (N, H, W) uint8 on device
    val: SegSplit
    class_names: List[str]
    ignore_index: int
    class_weights: Optional[torch.Tensor]


def build_loaders(cfg: SegTrainConfig, device: torch.device) -> SegData:
    """Decode both splits once; move the train split to `device`."""
    train = load_seg_split(cfg.data, cfg.train_split, cfg.dataset, cfg.max_train_items or None)
    val = load_seg_split(cfg.data, cfg.val_split, cfg.dataset, cfg.max_val_items or None)
    weights = None
    if cfg.class_weighting != 'none':
        w = class_weights(train.labels, train.num_classes, train.ignore_index,
                          cfg.class_weighting)
        weights = torch.from_numpy(w).to(device)
    print(f'train-seg: {len(train)} train / {len(val)} val frames '
          f'{train.images.shape[2]}x{train.images.shape[1]}, {train.num_classes} classes',
          flush=True)
    return SegData(common.to_device_stack(train.images, device),
                   common.to_device_stack(train.labels, device), val, train.class_names,
                   train.ignore_index, weights)


def train_step(forward_train, model: nn.Module, optimizer: torch.optim.Optimizer,
               data: SegData, cfg: SegTrainConfig, device: torch.device,
               generator: Optional[torch.Generator] = None) -> Dict[str, torch.Tensor]:
    """One optimiser step on a freshly augmented batch; returns {'loss': tensor}."""
    idx = torch.randint(0, data.images.shape[0], (cfg.batch_size,), device=device,
                        generator=generator)
    jitter = (cfg.jitter,) * 3
    x, y = seg_augment(data.images[idx], data.labels[idx], (cfg.crop_h, cfg.crop_w),
                       (cfg.scale_min, cfg.scale_max), cfg.flip, jitter, data.ignore_index,
                       generator)
    if not cfg.channels_last:
        x = x.contiguous()
    with common.autocast(device, cfg.bf16):
        logits, aux = forward_train(x)
    loss = cascade_ce_loss(logits, aux, y, cfg.aux_weights, data.ignore_index,
                           data.class_weights)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {'loss': loss}


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


def save_checkpoint(out_dir: str, model: ICNet, optimizer: torch.optim.Optimizer,
                    state: common.LoopState, metrics: Dict[str, object],
                    cfg: SegTrainConfig) -> None:
    """last.pt + train_state.pt every time; best.pt when val mIoU improved."""
    os.makedirs(out_dir, exist_ok=True)
    train_cfg = config_dict(cfg)
    save_net(os.path.join(out_dir, common.LAST_FILE), model, 'icnet', None, state.step,
             metrics, train_cfg, cfg.half_weights)
    miou = float(metrics.get('miou', float('nan')))
    if miou == miou and miou > state.best:
        state.best = miou
        save_net(os.path.join(out_dir, common.BEST_FILE), model, 'icnet', None, state.step,
                 metrics, train_cfg, cfg.half_weights)
    common.save_train_state(out_dir, optimizer, state)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse arguments, train, and leave last.pt / best.pt in --out."""
    return run_training_command('train-seg', __doc__, SegTrainConfig, 'out/seg', run, argv)


def run(cfg: SegTrainConfig, out_dir: str, device: torch.device, resume: bool) -> int:
    """Build, optionally resume, train and report; returns the exit code."""
    seed_everything(cfg.seed)
    common.setup_backend(device)
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
    print(f'train-seg: ICNet width {cfg.width}, '
          f'{common.parameter_count(model) / 1e6:.2f} M parameters, device {device}', flush=True)
    forward_train = common.maybe_compile(model.forward_train, cfg.compile, device)
    spec = common.LoopSpec(cfg.steps, cfg.time_budget_s, cfg.log_every, cfg.eval_every, cfg.lr,
                           cfg.schedule, cfg.warmup_frac)
    metrics = common.run_loop(
        spec, state, optimizer,
        lambda step: train_step(forward_train, model, optimizer, data, cfg, device),
        lambda: evaluate(model, data.val, device, cfg.eval_batch, cfg.bf16),
        lambda st, m: save_checkpoint(out_dir, model, optimizer, st, m, cfg), 'train-seg')
    print(f'train-seg: done at step {state.step} in {state.elapsed_s:.0f}s; last val mIoU '
          f'{metrics.get("miou", float("nan")):.4f}, best {state.best:.4f}', flush=True)
    return 0
