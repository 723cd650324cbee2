"""`cloudseg eval`: the CloudSeg comparison table (paper Table 1) on a labeled split.

For every frame, LR = `core.imageops.downsample(HR, scale)` (the uplink's operator), then:
'hr' (the original frame), 'bilinear', 'bicubic', and for each shipped SR net ('sr_base',
'sr_aware') the SR frame segmented with pyramid reuse (the LR frame feeds ICNet's branch of that
scale, as the cloud does) and without it ('<name>_nopyr'). Each method gets dataset-level mIoU
and per-class IoU against the labels, agreement mIoU against the HR prediction, and mean
PSNR/SSIM against HR (all from `core.metrics`). `--seg-model` evaluates another segmentation
network (TorchScript / torch.export + YAML, see `inference.seg_models`); only ICNet takes the
pyramid, so other models get no '<name>_nopyr' rows. A folder made by `cloudseg adapt` holds
`seg_icnet_x{S}.pt`: the 'sr_aware' rows are segmented with it, as the cloud does.

    cloudseg eval --data ../shared/data/camvid11 --split val --scale 4 --json out/eval_x4.json \
        --md out/eval_x4.md --plot out/eval_x4.png
"""
import argparse
import dataclasses
import json
import math
import os
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from cloudseg_ros.core import imageops
from cloudseg_ros.core.metrics import RunningConfusion, psnr, ssim
from cloudseg_ros.inference.model_files import (default_models_dir, seg_checkpoint,
                                                seg_scale_checkpoints, sr_file)
from cloudseg_ros.inference.seg_models import load_seg_model, require_same_classes, SegModel
from cloudseg_ros.nets.checkpoint import CheckpointError, load_checkpoint
from cloudseg_ros.nets.icnet import PYRAMID_FACTORS

from .config import resolve_device
from .datasets import SegSplit, load_seg_split, split_by_sequence
from .progress import Progress

# (B, 3, H, W) float in [0, 1], optional pyramid -> logits (B, C, H, W)
SegFn = Callable[[torch.Tensor, Optional[Dict[int, torch.Tensor]]], torch.Tensor]
# (B, 3, h, w) float in [0, 1] -> (B, 3, s*h, s*w)
SrFn = Callable[[torch.Tensor], torch.Tensor]
INTERPOLATIONS = ('bilinear', 'bicubic')
ADAPTED_SR_ROW = 'sr_aware'  # the SR a folder's seg_icnet_x{S}.pt was adapted to


class MethodStats:
    """Running numbers of one method over the split."""

    def __init__(self, num_classes: int, ignore_index: int) -> None:
        self.vs_label = RunningConfusion(num_classes, ignore_index)
        self.vs_hr = RunningConfusion(num_classes, None)  # the HR prediction has no void
        self.psnr: List[float] = []
        self.ssim: List[float] = []

    def summary(self, class_names: Sequence[str], image_metrics: bool) -> Dict[str, object]:
        """Return the method's JSON entry (non-finite numbers become null)."""
        ious = self.vs_label.class_iou()
        return {
            'miou': _json_float(self.vs_label.mean_iou()),
            'psnr': _json_float(np.mean(self.psnr)) if image_metrics and self.psnr else None,
            'ssim': _json_float(np.mean(self.ssim)) if self.ssim else None,
            'agreement_miou': _json_float(self.vs_hr.mean_iou()),
            'per_class_iou': {n: _json_float(v) for n, v in zip(class_names, ious)},
        }


def _json_float(value: float) -> Optional[float]:
    value = float(value)
    return value if math.isfinite(value) else None


def _to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2) \
        .float().div_(255.0)


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) float -> (B, H, W, 3) uint8, clamped and rounded like a saved image."""
    return (x.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def _fit(images: np.ndarray, hr_shape: Sequence[int]) -> np.ndarray:
    """Resize upsampled frames whose size lost the remainder of H or W to the HR size."""
    h, w = hr_shape[:2]
    if images.shape[1:3] == (h, w):
        return images
    return np.stack([imageops.upsample_bilinear(im, (w, h)) for im in images])


def method_images(hr: np.ndarray, lr: np.ndarray, scale: int, sr_fns: Dict[str, SrFn],
                  device: torch.device) -> Dict[str, np.ndarray]:
    """Reconstructions of a batch (uint8 `(B, H, W, 3)`) for every method, 'hr' included."""
    h, w = hr.shape[1:3]
    out = {'hr': hr,
           'bilinear': np.stack([imageops.upsample_bilinear(im, (w, h)) for im in lr]),
           'bicubic': np.stack([imageops.upsample_bicubic(im, (w, h)) for im in lr])}
    if sr_fns:
        lr_t = _to_tensor(lr, device)
        with torch.no_grad():
            for name, fn in sr_fns.items():
                out[name] = _fit(_to_uint8(fn(lr_t)), hr.shape[1:])
    return out


def _predict(seg_fn: SegFn, images: np.ndarray, pyramid_lr: Optional[np.ndarray], scale: int,
             device: torch.device) -> np.ndarray:
    """Argmax ids `(B, H, W)`; `pyramid_lr` (uint8 LR frames) feeds the branch of `scale`."""
    pyramid = None
    if pyramid_lr is not None and scale in PYRAMID_FACTORS:
        pyramid = {scale: _to_tensor(pyramid_lr, device)}
    with torch.no_grad():
        logits = seg_fn(_to_tensor(images, device), pyramid)
    return logits.argmax(1).to(torch.uint8).cpu().numpy()


def evaluate_split(split: SegSplit, scale: int, seg_fn: SegFn, sr_fns: Dict[str, SrFn],
                   device: torch.device, batch: int = 4, progress: Optional[Progress] = None,
                   pyramid_reuse: bool = True, sr_seg_fn: Optional[SegFn] = None
                   ) -> Dict[str, object]:
    """Run every method over the split; returns the JSON document's dict.

    `pyramid_reuse` False (a network without ICNet's pyramid): SR methods without the
    '<name>_nopyr' twins, which would be identical. `sr_seg_fn`: the network that segments the
    aware SR frames (a folder's `seg_icnet_x{S}.pt`, as the cloud uses it with sr_variant
    aware); every other row keeps `seg_fn`, whose HR prediction stays the agreement reference.
    """
    def seg_for(name: str) -> SegFn:
        return sr_seg_fn if sr_seg_fn is not None and name == ADAPTED_SR_ROW else seg_fn

    stats: Dict[str, MethodStats] = {}
    for start in range(0, len(split), batch):
        hr = split.images[start:start + batch]
        labels = split.labels[start:start + batch]
        lr = np.stack([imageops.downsample(im, scale) for im in hr])
        images = method_images(hr, lr, scale, sr_fns, device)
        preds = {name: _predict(seg_for(name), im, None, scale, device)
                 for name, im in images.items()}
        for name in sr_fns if pyramid_reuse else ():  # as deployed: SR frame + LR pyramid
            preds[f'{name}_nopyr'] = preds[name]
            preds[name] = _predict(seg_for(name), images[name], lr, scale, device)
            images[f'{name}_nopyr'] = images[name]
        for name in _ordered(preds, sr_fns):
            st = stats.setdefault(name, MethodStats(split.num_classes, split.ignore_index))
            _accumulate(st, preds[name], preds['hr'], labels, images[name], hr,
                        with_psnr=name != 'hr')
        if progress is not None:
            progress.update(len(hr))
    methods = {name: st.summary(split.class_names, name != 'hr') for name, st in stats.items()}
    return {'scale': scale, 'methods': methods}


def _ordered(preds: Dict[str, np.ndarray], sr_fns: Dict[str, SrFn]) -> List[str]:
    names = ['hr', *INTERPOLATIONS]
    for name in sr_fns:
        names += [name, f'{name}_nopyr']
    return [n for n in names if n in preds]


def _accumulate(st: MethodStats, pred: np.ndarray, hr_pred: np.ndarray, labels: np.ndarray,
                images: np.ndarray, hr: np.ndarray, with_psnr: bool) -> None:
    for i in range(len(pred)):
        st.vs_label.update(pred[i], labels[i])
        st.vs_hr.update(pred[i], hr_pred[i])
        if with_psnr:
            st.psnr.append(psnr(images[i], hr[i]))
        st.ssim.append(ssim(images[i], hr[i]))


def load_sr_seg(models_dir: str, scale: int, device: torch.device, seg: SegModel,
                seg_model: Optional[str] = None) -> Optional[SegModel]:
    """The folder's `seg_icnet_x{S}.pt` (`cloudseg adapt`) for the aware SR rows, or None;
    SegModelError unless it labels `seg`'s classes. Not with an explicit `seg_model` (the
    folder's were adapted from another net)."""
    path = seg_scale_checkpoints(models_dir, seg_model).get(scale)
    if path is None:
        return None
    sr_seg = load_seg_model(path, device)
    require_same_classes(sr_seg, seg)
    print(f'eval: {ADAPTED_SR_ROW} rows segmented with {path} (the other rows and the '
          f'agreement reference with {seg.path})', flush=True)
    return sr_seg


def load_models(models_dir: str, scale: int, device: torch.device,
                seg_model: Optional[str] = None) -> Tuple[SegModel, Dict[str, torch.nn.Module]]:
    """(seg model, {'sr_base': net, 'sr_aware': net}) from `models_dir`; missing SR -> warning.

    `seg_model`: another segmentation model file (default: the folder's seg_icnet.pt).
    """
    seg = load_seg_model(seg_model or seg_checkpoint(models_dir), device)
    sr_nets = {}
    for name, variant in (('sr_base', 'base'), ('sr_aware', 'aware')):
        path = os.path.join(models_dir, sr_file(scale, variant))
        if not os.path.isfile(path):
            print(f'eval: warning: no {path}; skipping {name} for x{scale}', flush=True)
            continue
        net, _ = load_checkpoint(path, device)
        if net.config.scale != scale:
            raise CheckpointError(f'{path} is x{net.config.scale}, not x{scale}')
        sr_nets[name] = net
    return seg, sr_nets


def _cell(value: Optional[float], fmt: str) -> str:
    return '-' if value is None else format(value, fmt)


def markdown_table(result: Dict[str, object], title: str = '') -> str:
    """Summary table plus a per-class IoU table, GitHub markdown."""
    methods: Dict[str, Dict[str, object]] = result['methods']  # type: ignore[assignment]
    lines = [f'### {title or "x" + str(result["scale"])}', '',
             '| method | mIoU | agreement mIoU | PSNR (dB) | SSIM |',
             '| --- | ---: | ---: | ---: | ---: |']
    for name, m in methods.items():
        lines.append(f'| {name} | {_cell(m["miou"], ".4f")} | '
                     f'{_cell(m["agreement_miou"], ".4f")} | {_cell(m["psnr"], ".2f")} | '
                     f'{_cell(m["ssim"], ".4f")} |')
    classes = list(next(iter(methods.values()))['per_class_iou']) if methods else []
    lines += ['', '| method | ' + ' | '.join(classes) + ' |',
              '| --- |' + ' ---: |' * len(classes)]
    for name, m in methods.items():
        ious = m['per_class_iou']
        lines.append(f'| {name} | ' + ' | '.join(_cell(ious[c], '.3f') for c in classes) + ' |')
    return '\n'.join(lines) + '\n'


def bar_plot(result: Dict[str, object], path: str, title: str = '') -> None:
    """Bar chart of mIoU and agreement mIoU per method (matplotlib, Agg backend)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    methods: Dict[str, Dict[str, object]] = result['methods']  # type: ignore[assignment]
    names = list(methods)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(names)), 4.0))
    for offset, key, label in ((-0.2, 'miou', 'mIoU vs labels'),
                               (0.2, 'agreement_miou', 'mIoU vs HR prediction')):
        values = [methods[n][key] or 0.0 for n in names]
        bars = ax.bar(x + offset, values, 0.4, label=label)
        ax.bar_label(bars, fmt='%.3f', fontsize=7)
    ax.set_xticks(x, names, rotation=20)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel('mIoU')
    ax.set_title(title or f'x{result["scale"]}')
    ax.legend(loc='lower left', fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    """Build the fixed `cloudseg eval` interface (scripts depend on it)."""
    parser = argparse.ArgumentParser(prog='cloudseg eval', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data', required=True, help='dataset root (camvid11 layout)')
    parser.add_argument('--split', required=True, help='labeled split, e.g. val')
    parser.add_argument('--scale', type=int, required=True, choices=(2, 3, 4))
    parser.add_argument('--json', required=True, help='write the results here')
    parser.add_argument('--models', default=None, help='weights folder (default: models/)')
    parser.add_argument('--seg-model', default=None, metavar='PATH',
                        help='segmentation model: our ICNet checkpoint, or TorchScript / '
                             '.pt2 with its YAML beside it (default: <models>/seg_icnet.pt)')
    parser.add_argument('--device', default='auto', help="'auto', 'cpu', 'cuda', ...")
    parser.add_argument('--md', default=None, help='also write a markdown table here')
    parser.add_argument('--plot', default=None, help='also write a bar plot PNG here')
    parser.add_argument('--max-frames', type=int, default=0, help='first N frames only (0: all)')
    parser.add_argument('--every', type=int, default=1,
                        help='every Nth frame only (a sample spread over all drives of a split)')
    parser.add_argument('--sequences', default='', metavar='DRIVE[,DRIVE]',
                        help="only these drives of the split (frames.csv 'sequence'), e.g. the "
                             'drive a `train-seg --set holdout_sequences=...` net never saw')
    parser.add_argument('--batch', type=int, default=4, help='frames per batch')
    return parser


def load_split(args: argparse.Namespace) -> SegSplit:
    """The split's frames of `--sequences` (all drives by default), the first `--max-frames`."""
    limit = args.max_frames or None
    if not args.sequences.strip():
        return load_seg_split(args.data, args.split, 'camvid', limit)  # reads only those
    split = load_seg_split(args.data, args.split, 'camvid')
    split = split_by_sequence(split, args.data, args.sequences.split(','))[1]
    return first_n(split, limit) if limit else split


def every_nth(split: SegSplit, n: int) -> SegSplit:
    """Every `n`th frame of a split (its first included)."""
    if n == 1:
        return split
    return _frames(split, slice(None, None, n))


def first_n(split: SegSplit, n: int) -> SegSplit:
    """The first `n` frames of a split."""
    return _frames(split, slice(0, n))


def _frames(split: SegSplit, rows: slice) -> SegSplit:
    return dataclasses.replace(split, images=split.images[rows], labels=split.labels[rows],
                               stems=split.stems[rows])


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Evaluate every method at one scale and write JSON (+ markdown, plot)."""
    args = build_parser().parse_args(argv)
    device = resolve_device(args.device)
    models_dir = args.models or default_models_dir()
    try:
        seg, sr_nets = load_models(models_dir, args.scale, device, args.seg_model)
        sr_seg = load_sr_seg(models_dir, args.scale, device, seg, args.seg_model)
        if args.every < 1 or args.max_frames < 0:
            raise ValueError(f'--every must be >= 1 and --max-frames >= 0, got {args.every} '
                             f'and {args.max_frames}')
        split = every_nth(load_split(args), args.every)
        if not len(split):
            raise ValueError(f'no frames of {args.data}/{args.split} left to evaluate')
    except (CheckpointError, OSError, ValueError) as exc:
        print(f'eval: {exc}', file=sys.stderr)
        return 2
    if seg.num_classes != split.num_classes:
        print(f'eval: {seg.path} predicts {seg.num_classes} classes but {args.data} has '
              f'{split.num_classes}', file=sys.stderr)
        return 2
    sr_fns = {name: (lambda x, net=net: net(x)) for name, net in sr_nets.items()}
    print(f'eval: {len(split)} frames of {args.split}, x{args.scale}, methods hr, '
          f'{", ".join(INTERPOLATIONS)}, {", ".join(sr_fns) or "(no SR weights)"}; '
          f'device {device}', flush=True)
    progress = Progress(len(split), f'eval x{args.scale}', every=max(1, args.batch * 5),
                        unit='frame')
    result = evaluate_split(split, args.scale, lambda x, p: seg(x, p), sr_fns, device,
                            args.batch, progress, pyramid_reuse=seg.supports_pyramid,
                            sr_seg_fn=(lambda x, p: sr_seg(x, p)) if sr_seg else None)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, 'w', encoding='utf-8') as f:
        json.dump(result, f, indent=2, allow_nan=False)
    drives = f' ({args.sequences})' if args.sequences.strip() else ''
    title = f'{os.path.basename(os.path.normpath(args.data))} {args.split}{drives}, ' \
            f'x{args.scale}, {len(split)} frames'
    table = markdown_table(result, title)
    print(table, flush=True)
    if args.md:
        with open(args.md, 'w', encoding='utf-8') as f:
            f.write(table)
    if args.plot:
        bar_plot(result, args.plot, title)
    return 0
