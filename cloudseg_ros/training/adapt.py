"""`cloudseg adapt`: adapt the analytics-aware SR net to a new camera, without labels.

The recipe is finetune-sr's (the same `train_step`, adaptive lambda, PSNR guard and final blend
toward the base net), run on the user's own frames: the teacher is the segmentation net's
output on the full-resolution frame, LR is what the uplink delivers (decoded JPEG / H.264
copies made once before training, `codec_data`), and training starts from the shipped aware
net `<models>/sr_carnm_x{S}_aware.pt`; the base net `<models>/sr_carnm_x{S}.pt` is the PSNR
reference. With `--set holdout_frac=F` the last share F of the frames is kept out of training
and the agreement mIoU of seg(SR(decoded LR)) with seg(HR) on them is reported before and after
adaptation, at fixed codec settings (JPEG q `eval_jpeg_quality`, H.264 CRF `eval_h264_crf`);
at the end it prints the bench-stream command (`--skip-frames`) that streams those frames
through the robot's real pipeline, for the gain at equal bitrate.

A second stage (`seg_steps`, default 1500, and/or `seg_time_budget_s`; 0 steps: off) then
adapts the segmentation net itself to the adapted SR's output on these frames, with the
original net's HR prediction as its teacher (`adapt_seg`; our ICNet only: another network is
left as it is). Use frames the nets have not seen: on CamVid's own training frames this stage
over-fitted and made the val clip worse (models/MODEL_CARD.md).

--out becomes a complete models folder (usable as `--models` and as the cloud's models_dir):
the original segmentation model, the adapted one as `seg_icnet_x{S}.pt` (used for frames sent
at scale S only, so full-resolution robots keep the original's accuracy; a net given by
`--seg-model` under another name is replaced by its adapted copy instead), the adapted
`sr_carnm_x{S}_aware.pt`, every other SR file of the source folder unchanged, and
`adapt.json`. Training state lives in
`<out>/.adapt_work` for --resume.

    cloudseg adapt --input robot_cam.mp4 --scale 4 --out models_robot \
        --max-frames 600 --set holdout_frac=0.3
"""
import argparse
import dataclasses
import glob
import json
import math
import os
import shlex
import shutil
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from cloudseg_ros.core.metrics import RunningConfusion
from cloudseg_ros.inference import model_files
from cloudseg_ros.inference.seg_models import load_seg_model, SegModel, sidecar_yaml
from cloudseg_ros.nets.checkpoint import CheckpointError, load_checkpoint
from cloudseg_ros.nets.checkpoint import save_checkpoint as save_net

from . import common
from .adapt_seg import adapt_segmentation, student_for
from .augment import to_float_nchw
from .codec_data import build_lr_variants, CodecRange, codec_range_of, crop_to_scale
from .config import (add_common_args, config_dict, ConfigError, load_config, resolve_device,
                     seed_everything)
from .datasets import group_by_size, load_frames
from .finetune_sr import (blend_frames, blend_to_psnr_budget, FinetuneConfig, Lambda,
                          pyramid_for, train_step)
from .losses import psnr_torch
from .train_sr import decoded_lr_pools, FramePools, save_checkpoint, super_resolve

WORK_DIR = '.adapt_work'  # inside --out: last.pt, best.pt, train_state.pt, before.json
REPORT_FILE = 'adapt.json'
FULL_DROP_WARN = 0.01  # held-out full-resolution agreement the seg stage may lose unannounced
# Keys the command line sets (--input, --scale, --max-frames, --models, --seg-model).
_CLI_KEYS = ('data', 'train_split', 'extra_frames', 'max_train_items', 'val_split',
             'max_val_items', 'scale', 'sr_checkpoint', 'seg_checkpoint')


@dataclass
class AdaptConfig(FinetuneConfig):
    """finetune-sr's keys (data keys filled from the command line) plus the held-out split."""

    data: str = ''  # unused: frames come from --input (stored as extra_frames)
    train_split: str = ''
    val_split: str = ''
    seg_checkpoint: str = ''
    holdout_frac: float = 0.0  # last share of the frames kept out of training, for evaluation
    eval_jpeg_quality: int = 50  # codec settings of the held-out evaluation
    eval_h264_crf: int = 28
    # Whole frames up to 1920x1080 (fit_crop clips to the frame; larger frames are cropped, so
    # memory stays bounded): the segmentation net pools context over the whole frame at run
    # time, and 480x360 crops of 1280x720 highway frames taught SR and the net a context they
    # never see (held-out gain +0.037 with those crops, +0.050 with whole frames, same budgets).
    crop_h: int = 1080
    crop_w: int = 1920
    # Segmentation stage after the SR stage: steps (0: none) and/or a time budget (0: none).
    # On by default: on highway720 x4 it added +0.015 (ultrafast round trips) and +0.026
    # (veryfast, the robot's) held-out agreement to the SR stage's (whole frames, 1,500 steps,
    # 103 s on an H200; models/MODEL_CARD.md).
    seg_steps: int = 1500
    seg_time_budget_s: float = 0.0
    # A twentieth of training's (the student starts from a trained net). On highway720 x4
    # 1e-4 and 3e-4 gained the same held-out x4 agreement (+0.054) but 1e-4 drifted less on
    # held-out full-resolution frames (JPEG q50 0.865 -> 0.838 against 0.826).
    seg_lr: float = 1e-4
    seg_hr_weight: float = 1.0  # weight of the HR view's KL (keeps the net's HR predictions)
    # Weight of the KL on decoded full-resolution copies (the robot at scale 1; 0: off) and
    # how many copies per frame (random JPEG quality / H.264 CRF in the codec ranges above).
    # With seg_lr 1e-4, 4 x 4 cut the held-out full-resolution JPEG q50 drop on highway720 from
    # 0.027 (1 x 2) to 0.013 at the same x4 gain (+0.053); the copies cost frames x 4 decoded
    # frames of device memory (1.5 GB for 140 frames of 1280x720).
    seg_full_weight: float = 4.0
    seg_full_variants: int = 4
    # With held-out frames, write only the stages that raised held-out agreement at the adapted
    # scale (false: every stage as trained). On a new CamVid drive whose frames lie 1 s apart
    # both stages lowered it (models/MODEL_CARD.md); the folder then serves the source's nets.
    keep_best: bool = True


@dataclass
class Holdout:
    """Held-out frames of one size: HR, the teacher's masks, and LR per eval codec."""

    hr: np.ndarray  # (N, H, W, 3) uint8, sides divisible by the scale
    teacher: np.ndarray  # (N, H, W) uint8: argmax of seg(HR)
    lr: Dict[str, np.ndarray]  # suffix ('_jpeg50', '_h264crf28') -> (N, H/s, W/s, 3) uint8
    full: Dict[str, np.ndarray]  # the same suffixes -> decoded HR (N, H, W, 3) uint8


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """The adapt command line (the training options plus input, scale and model folders)."""
    parser = argparse.ArgumentParser(prog='cloudseg adapt', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--input', required=True, help='video file or image folder')
    parser.add_argument('--scale', type=int, required=True, choices=(2, 3, 4))
    parser.add_argument('--models', default='',
                        help="source models folder (default: the package's models/)")
    parser.add_argument('--seg-model', default='',
                        help='segmentation model (default: <models>/seg_icnet.pt); ours, or a '
                             'TorchScript / .pt2 file with its YAML')
    parser.add_argument('--max-frames', type=int, default=0, help='use the first N frames')
    add_common_args(parser, '')
    return parser.parse_args(None if argv is None else list(argv))


def default_models_dir() -> str:
    """model_files.default_models_dir(), or the checkout's models/ where it cannot search."""
    try:
        return model_files.default_models_dir()
    except OSError:  # ament_index without AMENT_PREFIX_PATH (a plain venv)
        return os.path.normpath(os.path.join(os.path.dirname(__file__), '..', '..', 'models'))


def build_config(args: argparse.Namespace) -> AdaptConfig:
    """Defaults <- --config <- --set, then the command-line keys; checks what can be checked."""
    cfg = load_config(AdaptConfig, args.config, args.overrides)
    clash = [k for k in _CLI_KEYS if getattr(cfg, k) != getattr(AdaptConfig(), k)]
    if clash:
        raise ConfigError(f'{", ".join(clash)}: set by --input/--scale/--max-frames/--models/'
                          f'--seg-model, not --set')
    if not args.out:
        raise ConfigError('--out DIR is required (it becomes a models folder)')
    if not 0.0 <= cfg.holdout_frac < 1.0:
        raise ConfigError(f'holdout_frac must be in [0, 1), got {cfg.holdout_frac}')
    for key in ('seg_steps', 'seg_time_budget_s', 'seg_hr_weight', 'seg_full_weight',
                'seg_full_variants'):
        if getattr(cfg, key) < 0:
            raise ConfigError(f'{key} must be >= 0, got {getattr(cfg, key)}')
    if cfg.seg_lr <= 0:
        raise ConfigError(f'seg_lr must be > 0, got {cfg.seg_lr}')
    codec_range_of(cfg)  # codecs, quality ranges and x264 preset: fail before loading frames
    models = args.models or default_models_dir()
    if os.path.realpath(models) == os.path.realpath(args.out):
        raise ConfigError('--out must differ from the source models folder')
    return dataclasses.replace(
        cfg, extra_frames=args.input, max_train_items=max(0, args.max_frames), scale=args.scale,
        sr_checkpoint=os.path.join(models, model_files.sr_file(args.scale, 'aware')),
        seg_checkpoint=args.seg_model or model_files.seg_checkpoint(models))


def load_split(cfg: AdaptConfig) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """(training frames, held-out frames): frames [0, (1 - holdout_frac) N) train."""
    frames = load_frames(cfg.extra_frames, cfg.max_train_items or None)
    if not frames:
        raise FileNotFoundError(f'no frames in {cfg.extra_frames}')
    n_train = len(frames)
    if cfg.holdout_frac > 0:
        n_train = min(len(frames) - 1, max(1, int(round((1 - cfg.holdout_frac) * len(frames)))))
    if n_train < 1:
        raise ConfigError(f'{len(frames)} frame(s): too few to hold out {cfg.holdout_frac:g}')
    h, w = frames[0].shape[:2]
    print(f'adapt: {len(frames)} frames from {cfg.extra_frames} ({w}x{h}): {n_train} train, '
          f'{len(frames) - n_train} held out', flush=True)
    return frames[:n_train], frames[n_train:]


def fit_crop(cfg: AdaptConfig, groups: Sequence[np.ndarray]) -> AdaptConfig:
    """Crop sides clipped to the smallest frame, as multiples of the scale."""
    h = min([cfg.crop_h] + [g.shape[1] for g in groups])
    w = min([cfg.crop_w] + [g.shape[2] for g in groups])
    h, w = h - h % cfg.scale, w - w % cfg.scale
    if h < 4 * cfg.scale or w < 4 * cfg.scale:
        raise ConfigError(f'frames of {w}x{h} are too small for x{cfg.scale}')
    return dataclasses.replace(cfg, crop_h=h, crop_w=w)


def build_models(cfg: AdaptConfig, device: torch.device
                 ) -> Tuple[nn.Module, nn.Module, SegModel]:
    """(trainable aware SR, frozen base SR as the PSNR reference, frozen seg model)."""
    base_path = os.path.join(os.path.dirname(cfg.sr_checkpoint),
                             model_files.sr_file(cfg.scale, 'base'))
    sr, _ = load_checkpoint(cfg.sr_checkpoint, 'cpu')
    base, _ = load_checkpoint(base_path, 'cpu')
    for path, net in ((cfg.sr_checkpoint, sr), (base_path, base)):
        if net.config.scale != cfg.scale:
            raise ConfigError(f'{path} is x{net.config.scale}, not x{cfg.scale}')
    if sr.config != base.config:
        raise ConfigError(f'{cfg.sr_checkpoint} and {base_path} differ in architecture: the '
                          f'final blend needs the same network')
    seg = load_seg_model(cfg.seg_checkpoint, device)
    seg.eval().requires_grad_(False)
    base.to(device).eval().requires_grad_(False)
    sr.to(device).train()
    if cfg.channels_last:
        for net in (sr, base) + ((seg,) if seg.kind == 'icnet' else ()):
            net.to(memory_format=torch.channels_last)
    return sr, base, seg


def build_pools(frames: Sequence[np.ndarray], cfg: AdaptConfig,
                device: torch.device) -> FramePools:
    """Training HR frames and their decoded LR variants on the device."""
    groups = [crop_to_scale(g, cfg.scale) for g in group_by_size(frames)]
    weights = torch.tensor([float(len(g)) for g in groups])
    return FramePools([common.to_device_stack(g, device) for g in groups],
                      weights / weights.sum(), np.zeros((0, 1, 1, 3), np.uint8),
                      decoded_lr_pools(groups, cfg, device, 'adapt'))


def eval_codecs(cfg: AdaptConfig) -> Dict[str, CodecRange]:
    """The fixed codec settings of the held-out evaluation, by metric suffix."""
    q, crf = cfg.eval_jpeg_quality, cfg.eval_h264_crf
    return {f'_jpeg{q}': CodecRange(('jpeg',), (q, q)),
            f'_h264crf{crf}': CodecRange(('h264',), h264_crf=(crf, crf),
                                         h264_preset=cfg.h264_preset)}


@torch.no_grad()
def build_holdout(frames: Sequence[np.ndarray], seg: SegModel, cfg: AdaptConfig,
                  device: torch.device) -> List[Holdout]:
    """Held-out frames per size with the teacher's masks and their decoded LR per codec."""
    out = []
    for group in (crop_to_scale(g, cfg.scale) for g in group_by_size(frames)):
        teacher = []
        for i in range(0, len(group), cfg.eval_batch):
            hr = to_float_nchw(torch.from_numpy(group[i:i + cfg.eval_batch]).to(device))
            with common.autocast(device, cfg.bf16):
                teacher.append(seg(hr).argmax(1).to(torch.uint8).cpu().numpy())
        lr = {suffix: build_lr_variants(group, cfg.scale, 1, codec)[:, 0]
              for suffix, codec in eval_codecs(cfg).items()}
        full = {suffix: build_lr_variants(group, 1, 1, codec)[:, 0]
                for suffix, codec in eval_codecs(cfg).items()}
        out.append(Holdout(group, np.concatenate(teacher), lr, full))
    if out:
        print(f'adapt: held-out teacher masks and LR ({", ".join(out[0].lr)}) for '
              f'{sum(len(h.hr) for h in out)} frames', flush=True)
    return out


@torch.no_grad()
def agreement(sr_net: nn.Module, seg: SegModel, holdout: Sequence[Holdout], cfg: AdaptConfig,
              device: torch.device, full: bool = True) -> Dict[str, float]:
    """Agreement mIoU of seg(SR(decoded LR)) with seg(HR), and PSNR of SR, per eval codec;
    with `full`, also `full_resolution_agreement` (it depends on `seg` alone, so the SR stage,
    which leaves `seg` as it is, skips it)."""
    if not holdout:
        return {}
    out: Dict[str, float] = {}
    for suffix in holdout[0].lr:
        conf = RunningConfusion(seg.num_classes, None)
        psnr = []
        with common.eval_mode(sr_net):
            for part in holdout:
                for i in range(0, len(part.hr), cfg.eval_batch):
                    hr = to_float_nchw(torch.from_numpy(part.hr[i:i + cfg.eval_batch]).to(device))
                    lr_img = to_float_nchw(
                        torch.from_numpy(part.lr[suffix][i:i + cfg.eval_batch]).to(device))
                    sr = super_resolve(sr_net, lr_img, cfg.bf16)
                    psnr.append(psnr_torch(sr, hr))
                    with common.autocast(device, cfg.bf16):
                        pred = seg(sr, pyramid_for(lr_img, cfg.scale, cfg.pyramid_reuse))
                    conf.update(pred.argmax(1).to(torch.uint8).cpu().numpy(),
                                part.teacher[i:i + cfg.eval_batch])
        out['agree_miou' + suffix] = conf.mean_iou()
        out['psnr' + suffix] = float(torch.cat(psnr).mean())
    out['agree_miou'] = float(np.mean([v for k, v in out.items() if k.startswith('agree_')]))
    return {**out, **full_resolution_agreement(seg, holdout, cfg, device)} if full else out


@torch.no_grad()
def full_resolution_agreement(seg: SegModel, holdout: Sequence[Holdout], cfg: AdaptConfig,
                              device: torch.device) -> Dict[str, float]:
    """Agreement mIoU of seg(decoded HR) with seg(HR) per eval codec (`full_agree_miou_*`:
    the robot at scale 1; kept out of `agree_miou`, which scores the SR path)."""
    out: Dict[str, float] = {}
    for suffix in holdout[0].full if holdout else ():
        conf = RunningConfusion(seg.num_classes, None)
        for part in holdout:
            for i in range(0, len(part.hr), cfg.eval_batch):
                decoded = to_float_nchw(
                    torch.from_numpy(part.full[suffix][i:i + cfg.eval_batch]).to(device))
                with common.autocast(device, cfg.bf16):
                    pred = seg(decoded)
                conf.update(pred.argmax(1).to(torch.uint8).cpu().numpy(),
                            part.teacher[i:i + cfg.eval_batch])
        out['full_agree_miou' + suffix] = conf.mean_iou()
    return out


def export_models(out_dir: str, sr_net: Optional[nn.Module], cfg: AdaptConfig, step: int,
                  metrics: Dict[str, float], seg_net: Optional[SegModel] = None,
                  seg_step: int = 0) -> List[str]:
    """Write the adapted SR (the source's when `sr_net` is None) and seg net, if adapted,
    copy the rest; returns the names."""
    source = os.path.dirname(cfg.sr_checkpoint)
    adapted, seg_name = model_files.sr_file(cfg.scale, 'aware'), adapted_seg_file(cfg)
    if sr_net is None:
        shutil.copy2(cfg.sr_checkpoint, os.path.join(out_dir, adapted))
    else:
        save_net(os.path.join(out_dir, adapted), sr_net, 'carn', None, step, metrics,
                 config_dict(cfg), cfg.half_weights)
    # The source's net for this scale was adapted to the source's SR: it goes with that SR.
    replaced_sr = (adapted, seg_name) if sr_net is not None else (adapted,)
    written = [adapted] + _copy_other_scales(source, out_dir, replaced_sr)
    if seg_net is None and sr_net is not None and serves_beside_original(cfg) \
            and os.path.isfile(os.path.join(source, seg_name)):
        print(f'adapt: {os.path.join(source, seg_name)} not copied: it was adapted to the SR '
              f'net this run replaces (scale {cfg.scale} is served with '
              f'{os.path.basename(cfg.seg_checkpoint)})', flush=True)
    if seg_net is not None:  # stored as float16, like the shipped net
        save_net(os.path.join(out_dir, seg_name), seg_net.module, 'icnet', None, seg_step,
                 metrics, config_dict(cfg), True)
        written.append(seg_name)
    replaced = seg_name if seg_net is not None and not serves_beside_original(cfg) else None
    for path in (cfg.seg_checkpoint, sidecar_yaml(cfg.seg_checkpoint)):
        if os.path.isfile(path) and os.path.basename(path) != replaced:
            shutil.copy2(path, out_dir)
            written.append(os.path.basename(path))
    return written


def _copy_other_scales(source: str, out_dir: str, skip: Sequence[str]) -> List[str]:
    """Other scales' SR nets, and segmentation nets adapted to them earlier, as they were."""
    copied = []
    for path in sorted(glob.glob(os.path.join(source, 'sr_carnm_x*.pt'))
                       + glob.glob(os.path.join(source, model_files.seg_scale_file('*')))):
        if os.path.basename(path) not in skip:
            shutil.copy2(path, out_dir)
            copied.append(os.path.basename(path))
    return copied


def adapted_seg_file(cfg: AdaptConfig) -> str:
    """Where the adapted segmentation net goes in the output folder.

    Adapted from the folder's `seg_icnet.pt`: beside it as `seg_icnet_x{S}.pt`, which the cloud
    and bench-stream use for frames sent at scale S only, so robots sending full resolution (or
    another scale) keep the original net and its accuracy. Adapted from a net named otherwise
    (`--seg-model`): under that name, replacing it (give it to the cloud as `seg_model`).
    """
    if os.path.basename(cfg.seg_checkpoint) == model_files.SEG_FILE:
        return model_files.seg_scale_file(cfg.scale)
    return os.path.basename(cfg.seg_checkpoint)


def serves_beside_original(cfg: AdaptConfig) -> bool:
    """Whether the adapted net goes beside the original (True) or replaces it."""
    return adapted_seg_file(cfg) != os.path.basename(cfg.seg_checkpoint)


def write_report(out_dir: str, report: Dict[str, object]) -> None:
    """adapt.json, written atomically."""
    path = os.path.join(out_dir, REPORT_FILE)
    with open(path + '.tmp', 'w', encoding='utf-8') as f:
        json.dump(report, f, indent=2, sort_keys=True)
        f.write('\n')
    os.replace(path + '.tmp', path)


def _before_metrics(work: str, resume: bool, compute) -> Dict[str, float]:
    """Agreement of the unadapted net: measured once, kept in the work folder for --resume."""
    path = os.path.join(work, 'before.json')
    if resume and os.path.isfile(path):
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    metrics = compute()
    os.makedirs(work, exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(metrics, f)
    return metrics


def _fmt(metrics: Dict[str, float]) -> str:
    keys = sorted(k for k in metrics if k.startswith(('agree_miou', 'full_agree_miou')))
    return ', '.join(f'{k} {metrics[k]:.4f}' for k in keys) or 'no held-out frames'


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse arguments, adapt, and leave a models folder in --out."""
    args = parse_args(argv)
    try:
        cfg = build_config(args)
        return run(cfg, args.out, resolve_device(args.device), args.resume)
    except (ConfigError, OSError, CheckpointError) as exc:
        print(f'adapt: {exc}', file=sys.stderr)
        return 2


def run(cfg: AdaptConfig, out_dir: str, device: torch.device, resume: bool) -> int:
    """Load, adapt, blend, evaluate and export; returns the exit code."""
    seed_everything(cfg.seed)
    common.setup_backend(device)
    work = os.path.join(out_dir, WORK_DIR)
    train_frames, held = load_split(cfg)
    cfg = fit_crop(cfg, group_by_size(train_frames))
    sr_net, base, seg = build_models(cfg, device)
    student = student_for(seg, cfg.seg_steps)
    if resume:
        resumed, _ = load_checkpoint(os.path.join(work, common.LAST_FILE), device)
        sr_net.load_state_dict(resumed.state_dict())
    pools = build_pools(train_frames, cfg, device)
    holdout = build_holdout(held, seg, cfg, device)
    before = _before_metrics(work, resume, lambda: agreement(sr_net, seg, holdout, cfg, device))
    print(f'adapt: before: {_fmt(before)}', flush=True)
    optimizer = common.build_optimizer(sr_net.parameters(), cfg.optimizer, cfg.lr,
                                       cfg.weight_decay)
    state = common.load_train_state(work, optimizer) if resume else common.LoopState()
    lam = Lambda(float(state.extra.get('lambda', cfg.l1_weight)))
    print(f'adapt: x{cfg.scale} from {cfg.sr_checkpoint}, seg {cfg.seg_checkpoint} '
          f'({seg.kind}), crop {cfg.crop_w}x{cfg.crop_h}, device {device}, '
          f'from step {state.step}', flush=True)
    metrics = _train(sr_net, base, seg, optimizer, pools, holdout, lam, state, cfg, device, work)
    blend: Dict[str, float] = {}
    if cfg.final_max_drop_db > 0:
        frames = blend_frames(pools, cfg.blend_frames)
        blend = blend_to_psnr_budget(sr_net, base, frames, cfg.scale, cfg.final_max_drop_db,
                                     cfg.bf16, label='adapt')
        metrics = agreement(sr_net, seg, holdout, cfg, device, full=False)
    # SR alone leaves the segmentation net, and so its full-resolution agreement, unchanged.
    metrics = {**{k: v for k, v in before.items() if k.startswith('full_')}, **metrics}
    seg_state = common.LoopState()
    sr_stage = dict(metrics)
    if student is not None:
        print(f'adapt: SR stage done: {_fmt(metrics)}', flush=True)
        metrics, seg_state = adapt_segmentation(
            student, seg, sr_net, pools, lambda: agreement(sr_net, student, holdout, cfg, device),
            cfg, device, work, resume)
        metrics = full_resolution_as_served(metrics, before, cfg)
    stages = {'source': before, 'sr': {**sr_stage, **blend, 'lambda': lam.value}}
    if student is not None:
        stages['sr+seg'] = {**metrics, **blend, 'lambda': lam.value}
    kept = kept_stage(stages, cfg.keep_best and bool(held))
    metrics = stages[kept]  # what the folder serves
    warnings = adapt_warnings(stages, kept, cfg, bool(held))
    written = export_models(out_dir, sr_net if kept != 'source' else None, cfg, state.step,
                            metrics, student if kept == 'sr+seg' else None, seg_state.step)
    write_report(out_dir, {
        'source_models': os.path.dirname(cfg.sr_checkpoint), 'seg_model': cfg.seg_checkpoint,
        'input': cfg.extra_frames, 'scale': cfg.scale, 'frames_train': len(train_frames),
        'frames_holdout': len(held), 'holdout_frac': cfg.holdout_frac, 'steps': state.step,
        'train_s': round(state.elapsed_s, 1), 'seg_adapted': kept == 'sr+seg',
        'seg_steps': seg_state.step, 'seg_train_s': round(seg_state.elapsed_s, 1),
        'kept': kept, 'stages': stages,
        'before': before, 'after': metrics, 'sr_stage': sr_stage,
        'blend_alpha': blend.get('blend_alpha'), 'psnr_drop_db': blend.get('train_psnr_drop'),
        'eval_codecs': list(eval_codecs(cfg)), 'h264_preset': cfg.h264_preset,
        'warnings': warnings, 'files': written})
    print(f'adapt: done (SR {state.step} steps in {state.elapsed_s:.0f}s, segmentation'
          f' {seg_state.step} steps in {seg_state.elapsed_s:.0f}s); kept {kept}; after:'
          f' {_fmt(metrics)} (before: {_fmt(before)}); wrote {out_dir}', flush=True)
    if held:
        print('adapt: to stream the held-out frames (against --models of the source for the '
              f'baseline): {held_out_stream_command(cfg, out_dir, len(train_frames), len(held))}',
              flush=True)
    return 0


STAGES = ('source', 'sr', 'sr+seg')  # what an output folder can serve, least changed first


def kept_stage(stages: Dict[str, Dict[str, float]], choose: bool) -> str:
    """The stage whose nets go into the output folder.

    `stages` maps 'source' / 'sr' / 'sr+seg' (those that ran, in that order) to their held-out
    metrics. Without `choose` (no held-out frames, or keep_best off): the last stage. Else the
    highest held-out `agree_miou`; a tie goes to the less changed stage. Picking on the frames
    that also report the gain makes that gain a little optimistic (one pick among <= 3).
    """
    ran = [name for name in STAGES if name in stages]
    if not choose or any('agree_miou' not in stages[name] for name in ran):
        return ran[-1]

    def score(name: str) -> Tuple[float, int]:
        value = stages[name]['agree_miou']
        return (value if math.isfinite(value) else -math.inf), -ran.index(name)  # NaN: worst
    return max(ran, key=score)


def adapt_warnings(stages: Dict[str, Dict[str, float]], kept: str, cfg: AdaptConfig,
                   checked: bool) -> List[str]:
    """Every warning of the run, printed (adapt.json keeps them): full-resolution drift, a
    segmentation stage that went unchecked or lowered the held-out agreement, and stages
    left out of the folder because they lowered it."""
    before, sr_stage, after = stages['source'], stages['sr'], stages[kept]
    warnings = full_resolution_warnings(before, after)
    if 'sr+seg' in stages:
        beside = adapted_seg_file(cfg) if serves_beside_original(cfg) else None
        warnings += seg_stage_warnings(sr_stage, stages['sr+seg'], checked, beside,
                                       written=kept == 'sr+seg')
    if kept == 'source' and len(stages) > 1:
        trained = ', '.join(f'{name} {stages[name]["agree_miou"]:.4f}'
                            for name in STAGES[1:] if name in stages)
        warnings.append(f'no stage raised held-out agreement (agree_miou source '
                        f'{before["agree_miou"]:.4f}; {trained}): the folder serves the '
                        f'source\'s nets unchanged (--set keep_best=false writes them anyway)')
    for warning in warnings:
        print(f'adapt: warning: {warning}', flush=True)
    return warnings


def held_out_stream_command(cfg: AdaptConfig, out_dir: str, n_train: int, n_held: int) -> str:
    """The bench-stream command that streams exactly the held-out frames through `out_dir`.

    They are frames [n_train, n_train + n_held) of the input (of its first --max-frames), so
    the held-out gain can be read at equal bitrate through the robot's real stream.
    """
    return (f'cloudseg bench-stream --input {shlex.quote(cfg.extra_frames)} '
            f'--skip-frames {n_train} --max-frames {n_held} --models {shlex.quote(out_dir)} '
            f'--sr-scales {cfg.scale} --downsample-scales {cfg.scale} --json adapted.json')


def full_resolution_as_served(metrics: Dict[str, float], before: Dict[str, float],
                              cfg: AdaptConfig) -> Dict[str, float]:
    """The held-out metrics of what the output folder serves at full resolution.

    When the adapted net goes beside the original (`seg_icnet_x{S}.pt`), full-resolution frames
    keep the original net: its scores stay, and the adapted net's own are reported apart
    (`adapted_net_full_agree_miou_*`) for anyone who would use it at scale 1.
    """
    if not serves_beside_original(cfg):
        return metrics
    out = {('adapted_net_' + k if k.startswith('full_') else k): v for k, v in metrics.items()}
    out.update({k: v for k, v in before.items() if k.startswith('full_')})
    return out


def full_resolution_warnings(before: Dict[str, float], after: Dict[str, float],
                             tolerance: float = FULL_DROP_WARN) -> List[str]:
    """What the adapted segmentation net lost on held-out full-resolution frames, if anything.

    The segmentation stage fits the net to this camera's SR output; on 140 highway frames it
    also drifted on decoded full-resolution frames (models/MODEL_CARD.md), which a robot sending
    scale 1 would get, so the user is told rather than left to find out.
    """
    drops = {k: before[k] - after[k] for k in before
             if k.startswith('full_agree_miou') and k in after}
    worst = max(drops, key=drops.get, default=None)
    if worst is None or drops[worst] <= tolerance:
        return []
    return [f'the adapted segmentation net agrees less with the original on held-out '
            f'full-resolution frames ({worst} {before[worst]:.4f} -> {after[worst]:.4f}): for '
            f'robots that also send full resolution, serve them with the original '
            f'segmentation model, or adapt with --set seg_steps=0']


def seg_stage_warnings(sr_stage: Dict[str, float], after: Dict[str, float], checked: bool,
                       beside: Optional[str] = None, written: bool = True) -> List[str]:
    """Whether the segmentation stage helped the adapted scale on held-out frames, or went
    unchecked.

    On frames the nets already knew (CamVid training frames) the stage's per-scale net
    over-fitted and made nearby frames worse (models/MODEL_CARD.md), while the SR stage alone
    was neutral; the held-out frames are the only check `adapt` has. `beside` names the
    adapted net when it went beside the original (removing it restores the original).
    `written` False: keep_best left the stage's net out of the folder.
    """
    remove = (f', or remove {beside} from the folder to serve that scale with the original net'
              if beside else '')
    fix = 'adapt with --set seg_steps=0' + remove if written else \
        'its net was not written (keep_best)'
    if not checked:
        return ['the segmentation stage ran without held-out frames, so nothing checked it; on '
                'frames the nets were trained on it over-fits: adapt with --set '
                'holdout_frac=0.3 to check it']
    if 'agree_miou' in after and after['agree_miou'] < sr_stage.get('agree_miou', 0.0):
        return [f'the segmentation stage lowered held-out agreement (agree_miou '
                f'{sr_stage["agree_miou"]:.4f} after the SR stage -> {after["agree_miou"]:.4f}): '
                + fix]
    return []


def _train(sr_net: nn.Module, base: nn.Module, seg: SegModel,
           optimizer: torch.optim.Optimizer, pools: FramePools, holdout: Sequence[Holdout],
           lam: Lambda, state: common.LoopState, cfg: AdaptConfig, device: torch.device,
           work: str) -> Dict[str, float]:
    """finetune-sr's loop on the adaptation frames; checkpoints go to `work`."""
    def checkpoint(st: common.LoopState, metrics: Dict[str, float]) -> None:
        st.extra['lambda'] = lam.value
        save_checkpoint(work, sr_net, optimizer, st, metrics, cfg,
                        metric='agree_miou' if holdout else 'none')

    spec = common.LoopSpec(cfg.steps, cfg.time_budget_s, cfg.log_every, cfg.eval_every, cfg.lr,
                           cfg.schedule, cfg.warmup_frac)
    metrics = common.run_loop(
        spec, state, optimizer,
        lambda step: train_step(sr_net, base, seg, optimizer, pools, lam, cfg, device),
        lambda: agreement(sr_net, seg, holdout, cfg, device, full=False), checkpoint, 'adapt')
    return {k: v for k, v in metrics.items() if not math.isnan(v)}
