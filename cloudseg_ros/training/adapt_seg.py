"""The segmentation stage of `cloudseg adapt`: the net itself learns the new camera's uplink.

After the SR stage (and its blend), a copy of the segmentation net (our ICNet) is distilled on
the same frames: its prediction on SR(decoded LR), with the LR frame in its low-resolution
branch as the cloud runs it, and its prediction on the HR frame are both pulled toward the
frozen original net's prediction on the HR frame, and so (`seg_full_weight`) is its prediction
on decoded full-resolution copies of the frames (JPEG / H.264 at random settings, what a robot
sends at scale 1). Without that third term the student drifted on held-out full-resolution
frames (highway720: JPEG q50 agreement 0.865 -> 0.809; with it at weight 1, 2 copies 0.826,
at the defaults, weight 4, 4 copies, seg_lr 1e-4: 0.853; models/MODEL_CARD.md).
The teacher stays the original net, so the held-out agreement still measures the distance to
what the full-resolution stream would give (a student that drifted on HR frames would be
caught there, not rewarded). BatchNorm statistics stay frozen (eval mode): the batches are
small and all from one camera.

Checkpoints and the optimiser state live in `<work>/seg` for --resume.
"""
import copy
import os
import time
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import nn

from cloudseg_ros.inference.seg_models import SegModel
from cloudseg_ros.nets.checkpoint import load_checkpoint, save_checkpoint as save_net

from . import common
from .codec_data import build_lr_variants, codec_range_of
from .config import config_dict, ConfigError
from .finetune_sr import lr_hr_batch, pyramid_for
from .losses import seg_kl_loss
from .train_sr import FramePools, codec_batch, super_resolve

SEG_WORK = 'seg'  # inside adapt's work folder


def student_for(seg: SegModel, steps: int) -> Optional[SegModel]:
    """The student for a stage of `steps` steps; None (said why) for 0 steps or a foreign net.

    Another network (TorchScript / .pt2) is left as it is: the SR stage alone adapts to it.
    """
    if steps <= 0:
        return None
    if seg.kind != 'icnet':
        print(f'adapt: segmentation stage skipped: {seg.path} is a {seg.kind} model (the stage '
              f'adapts our ICNet only); SR is adapted to it', flush=True)
        return None
    return build_student(seg)


def build_student(seg: SegModel) -> SegModel:
    """A trainable copy of `seg` (our ICNet only: the result is saved as our checkpoint)."""
    if seg.kind != 'icnet':
        raise ConfigError(f'seg_steps > 0 adapts our ICNet checkpoint only; {seg.path} is a '
                          f'{seg.kind} model (set seg_steps=0 to adapt SR alone)')
    student = copy.deepcopy(seg)
    student.eval().requires_grad_(True)  # eval: BatchNorm keeps the original statistics
    return student


def full_resolution_pools(pools: FramePools, cfg, device: torch.device
                          ) -> Optional[FramePools]:
    """The training frames paired with `seg_full_variants` decoded full-resolution copies each
    (as pools whose "LR" is the decoded frame at scale 1); None when the term is off."""
    if cfg.seg_full_weight <= 0 or cfg.seg_full_variants <= 0:
        return None
    codec_range = codec_range_of(cfg)
    t0 = time.perf_counter()
    decoded = [common.to_device_stack(build_lr_variants(
        pool.cpu().numpy(), 1, cfg.seg_full_variants, codec_range, seed=cfg.seed + 1 + i),
        device) for i, pool in enumerate(pools.pools)]
    size_mb = sum(d.numel() * d.element_size() for d in decoded) / 1e6
    print(f'adapt-seg: {sum(len(d) for d in decoded)} frames x {cfg.seg_full_variants} decoded '
          f'full-resolution variants, {size_mb:.0f} MB on {device} '
          f'({time.perf_counter() - t0:.1f}s)', flush=True)
    return FramePools(pools.pools, pools.weights, pools.val, decoded)


def _full_resolution_kl(student: SegModel, teacher: SegModel, full_pools: FramePools, cfg,
                        device: torch.device) -> torch.Tensor:
    """KL(teacher(HR) || student(the same frame decoded at full resolution))."""
    decoded, hr = codec_batch(full_pools, cfg.batch_size, (cfg.crop_h, cfg.crop_w), 1, 0.0,
                              vertical_flips=False)
    with torch.no_grad(), common.autocast(device, cfg.bf16):
        target = teacher(hr)
    with common.autocast(device, cfg.bf16):
        return seg_kl_loss(student(decoded), target)


def seg_step(student: SegModel, teacher: SegModel, sr_net: nn.Module,
             optimizer: torch.optim.Optimizer, pools: FramePools, cfg,
             device: torch.device, full_pools: Optional[FramePools] = None
             ) -> Dict[str, torch.Tensor]:
    """One step of KL(teacher(HR) || student(SR)) + seg_hr_weight * KL(.. || student(HR))
    + seg_full_weight * KL(teacher(HR) || student(decoded HR)) when `full_pools` are given."""
    lr_img, hr = lr_hr_batch(pools, cfg)
    with torch.no_grad():
        with common.autocast(device, cfg.bf16):
            target = teacher(hr)
        sr = super_resolve(sr_net, lr_img, cfg.bf16)
    with common.autocast(device, cfg.bf16):
        on_sr = student(sr, pyramid_for(lr_img, cfg.scale, cfg.pyramid_reuse))
    kl_sr = seg_kl_loss(on_sr, target)
    losses = {'kl_sr': kl_sr}
    loss = kl_sr
    if cfg.seg_hr_weight > 0:
        with common.autocast(device, cfg.bf16):
            on_hr = student(hr)
        losses['kl_hr'] = seg_kl_loss(on_hr, target)
        loss = loss + cfg.seg_hr_weight * losses['kl_hr']
    if full_pools is not None:
        losses['kl_full'] = _full_resolution_kl(student, teacher, full_pools, cfg, device)
        loss = loss + cfg.seg_full_weight * losses['kl_full']
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {'loss': loss, **losses}


def adapt_segmentation(student: SegModel, teacher: SegModel, sr_net: nn.Module,
                       pools: FramePools, eval_fn: Callable[[], Dict[str, float]], cfg,
                       device: torch.device, work: str, resume: bool
                       ) -> Tuple[Dict[str, float], common.LoopState]:
    """Train `student` for seg_steps / seg_time_budget_s; returns (last metrics, loop state)."""
    seg_work = os.path.join(work, SEG_WORK)
    optimizer = common.build_optimizer(student.parameters(), cfg.optimizer, cfg.seg_lr,
                                       cfg.weight_decay)
    state = common.LoopState()
    if resume and os.path.isfile(os.path.join(seg_work, common.LAST_FILE)):
        saved, _ = load_checkpoint(os.path.join(seg_work, common.LAST_FILE), device)
        student.module.load_state_dict(saved.state_dict())
        state = common.load_train_state(seg_work, optimizer)

    def checkpoint(st: common.LoopState, metrics: Dict[str, float]) -> None:
        os.makedirs(seg_work, exist_ok=True)
        save_net(os.path.join(seg_work, common.LAST_FILE), student.module, 'icnet', None,
                 st.step, metrics, config_dict(cfg))
        common.save_train_state(seg_work, optimizer, st)

    full_pools = full_resolution_pools(pools, cfg, device)
    views = ('SR(decoded LR), HR and decoded HR' if full_pools is not None
             else 'SR(decoded LR) and HR')
    print(f'adapt-seg: distilling {cfg.seg_checkpoint} on {views}, from step {state.step}',
          flush=True)
    spec = common.LoopSpec(cfg.seg_steps, cfg.seg_time_budget_s, cfg.log_every, cfg.eval_every,
                           cfg.seg_lr, cfg.schedule, cfg.warmup_frac)
    with common.eval_mode(sr_net):
        metrics = common.run_loop(
            spec, state, optimizer,
            lambda step: seg_step(student, teacher, sr_net, optimizer, pools, cfg, device,
                                  full_pools),
            eval_fn, checkpoint, 'adapt-seg')
    return metrics, state
