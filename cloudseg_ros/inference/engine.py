"""The cloud's SR + segmentation engine: low-resolution frames in, full-resolution masks out.

CloudSeg's server side without any ROS: load the networks once, group the frames of a call by
(shape, scale), super-resolve each group in one batch, segment it with pyramid reuse (the
received LR frame feeds the matching ICNet branch) and return uint8 masks at the original size.
The segmentation model is our ICNet or a user's TorchScript / torch.export network
(`seg_models`); only ICNet takes the pyramid, the others segment the SR frame alone.
"""
import contextlib
from dataclasses import dataclass, field
import logging
import time
from typing import ContextManager, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from cloudseg_ros.inference.overlay import device_overlay, overlays_on_device
from cloudseg_ros.inference.seg_models import (load_seg_model, require_same_classes, SegModel,
                                               SegModelError)
from cloudseg_ros.nets.carn import densify_group_convs
from cloudseg_ros.nets.checkpoint import load_checkpoint
from cloudseg_ros.nets.icnet import fuse_batchnorm, PYRAMID_FACTORS

_LOG = logging.getLogger(__name__)
SR_MODES = ('model', 'bilinear')
PRECISIONS = ('auto', 'bf16', 'fp16', 'fp32')
ALL_SCALES = (1, 2, 3, 4)
_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16, 'fp32': torch.float32}
# Captured graphs keep their activations alive; bound the number of (batch, shape, scale,
# pyramid reuse) keys. 16 = batch buckets 1, 2, 4, 8 at four scales of one camera size.
MAX_CUDA_GRAPHS = 16


class EngineError(ValueError):
    """A request the engine cannot serve (unknown scale, bad input, bad configuration)."""


@dataclass
class EngineConfig:
    """What the engine loads and how it runs."""

    seg_checkpoint: str  # ICNet checkpoint (models/seg_icnet.pt), or TorchScript / .pt2 + YAML
    sr_checkpoints: Dict[int, str] = field(default_factory=dict)  # scale -> CARN checkpoint
    # scale -> a segmentation net for frames sent at that scale (`cloudseg adapt` writes one
    # tuned to its SR output); every other scale, 1 included, uses seg_checkpoint.
    seg_scale_checkpoints: Dict[int, str] = field(default_factory=dict)
    sr_mode: str = 'model'  # 'model': CARN per scale; 'bilinear': plain resize (baseline)
    device: str = 'auto'  # 'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', ...
    precision: str = 'auto'  # 'auto' (bf16 on CUDA, fp32 on CPU), 'bf16', 'fp16', 'fp32'
    # Feed the LR frame to ICNet's branch of its scale (paper 3.2). Live: a change takes effect
    # at the next batch; CUDA graphs are keyed by it (captured again, never replayed stale).
    pyramid_reuse: bool = True
    cuda_graphs: bool = False  # capture SR and seg per (batch, shape, scale); CUDA only
    warmup: bool = True  # run every scale once at start so the first frame is not slow
    warmup_size: Tuple[int, int] = (480, 360)  # (W, H) of the warm-up frames
    compile: bool = False  # torch.compile the networks (CUDA; first call per shape is slow)
    channels_last: bool = True  # NHWC activations on CUDA (faster cuDNN convs); ignored on CPU
    # Pad a group to the next power of two (repeating its last frame): a fleet forms batches of
    # every size, and each new size costs a compilation (~20 s) or a graph capture. None = on
    # when compiling or capturing CUDA graphs on CUDA.
    pad_batches: Optional[bool] = None
    warmup_batches: Tuple[int, ...] = (1,)  # batch sizes warmed up when pad_batches is on
    warmup_scales: Tuple[int, ...] = ALL_SCALES  # scales warmed up (those supported)
    # Build the overlays inputs ask for (EngineInput.overlay_alpha) on the device: 'auto' = on
    # CUDA only (on the CPU the node's output threads blend in parallel instead), 'always',
    # 'never'.
    overlay: str = 'auto'


@dataclass
class EngineInput:
    """One received frame: RGB uint8 (h, w, 3) at 1/scale, and the robot's (W, H)."""

    lr_rgb: np.ndarray
    scale: int
    orig_size: Tuple[int, int]  # (W, H)
    # With the engine's overlays on: also return this frame's overlay blended with this weight.
    overlay_alpha: Optional[float] = None


@dataclass
class EngineOutput:
    """Class mask uint8 (H, W) at orig_size, and the time of the batch it ran in (ms).

    timings_ms: 'sr', 'seg' (device time of those stages for the whole group of frames batched
    with this one) and 'total' (wall time of the group, upload and download included): the
    latency this frame saw. Divide by the group size for a per-frame cost.
    """

    mask: np.ndarray
    timings_ms: Dict[str, float]
    overlay: Optional[np.ndarray] = None  # (H, W, 3) uint8 RGB, when asked and built here


def padded_size(batch: int, pad: bool) -> int:
    """The batch size actually run: `batch`, or with `pad` the next power of two."""
    return 1 << (batch - 1).bit_length() if pad and batch > 1 else batch


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda if available else cpu; refuse cuda when there is none."""
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    device = torch.device(name)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise EngineError(f"device '{name}' requested but CUDA is not available")
    return device


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """Compute dtype: 'auto' is bf16 on CUDA (fp16 on GPUs without bf16) and fp32 on CPU."""
    if name not in PRECISIONS:
        raise EngineError(f'precision must be one of {PRECISIONS}, got {name!r}')
    if name == 'auto':
        if device.type != 'cuda':
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if name == 'fp16' and device.type != 'cuda':
        raise EngineError('fp16 needs CUDA; use fp32 or bf16 on the CPU')
    return _DTYPES[name]


class _Clock:
    """Stage boundaries: CUDA events on the GPU (no sync between stages), perf_counter on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == 'cuda'
        self.marks: list = []

    def mark(self) -> None:
        """Record a boundary on the current stream (or now, on the CPU)."""
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def intervals_ms(self) -> List[float]:
        """Return the times between marks; on CUDA call after the stream has synchronised."""
        pairs = zip(self.marks, self.marks[1:])
        if self.cuda:
            return [a.elapsed_time(b) for a, b in pairs]
        return [(b - a) * 1e3 for a, b in pairs]


@dataclass
class _Graphs:
    """CUDA graphs of one (batch, LR shape, scale, output size, pyramid reuse) key."""

    static_lr: torch.Tensor
    static_mask: torch.Tensor
    sr_graph: Optional['torch.cuda.CUDAGraph']  # None when SR is the identity (scale 1)
    seg_graph: 'torch.cuda.CUDAGraph'


class SegEngine:
    """Super-resolution + segmentation of low-resolution frames, batched per (shape, scale)."""

    def __init__(self, config: EngineConfig) -> None:
        if config.sr_mode not in SR_MODES:
            raise EngineError(f'sr_mode must be one of {SR_MODES}, got {config.sr_mode!r}')
        self.config = config
        self.device = resolve_device(config.device)
        self.dtype = resolve_precision(config.precision, self.device)
        self._channels_last = config.channels_last and self.device.type == 'cuda'
        self._graphs: Dict[tuple, Optional[_Graphs]] = {}
        self._pad_batches = config.pad_batches if config.pad_batches is not None else (
            self.device.type == 'cuda' and (config.compile or config.cuda_graphs))
        self._stream = None
        if self.device.type == 'cuda':
            # Few distinct shapes per deployment: autotuned conv algorithms pay off quickly.
            torch.backends.cudnn.benchmark = True
            # Its own stream, so that two engines on one GPU (`device:=cuda,cuda`) overlap:
            # one computes while the other's thread waits for its result or publishes.
            self._stream = torch.cuda.Stream(self.device)
        elif config.cuda_graphs:
            _LOG.warning('cuda_graphs needs a CUDA device: %s runs eagerly', self.device)
        self.seg_model = self._load_seg(config.seg_checkpoint)
        self.num_classes = self.seg_model.num_classes
        self.class_names: List[str] = self.seg_model.class_names
        self.colors: np.ndarray = self.seg_model.colors  # uint8 (num_classes, 3) RGB
        self.ignore_index = self.seg_model.ignore_index  # the labels' void id
        self.seg_scale_models: Dict[int, SegModel] = {
            int(scale): self._load_scale_seg(int(scale), path)
            for scale, path in sorted(config.seg_scale_checkpoints.items())}
        self.overlays_on_device = overlays_on_device(config.overlay, self.device)
        self._palette = torch.tensor(np.asarray(self.colors, np.uint8), device=self.device)
        self.sr_models: Dict[int, nn.Module] = {}
        if config.sr_mode == 'model':
            for scale, path in sorted(config.sr_checkpoints.items()):
                self.sr_models[int(scale)] = self._load(path, 'carn', int(scale))
        if config.warmup:
            self._warmup()

    def supported_scales(self) -> List[int]:
        """Scales process() accepts: 1 plus every SR model's scale (all of 1..4 in bilinear)."""
        if self.config.sr_mode == 'bilinear':
            return list(ALL_SCALES)
        return [1] + sorted(self.sr_models)

    def process(self, batch: Sequence[EngineInput]) -> List[EngineOutput]:
        """Masks for `batch`, in order; frames of equal (shape, scale, orig_size) run together."""
        for item in batch:
            self._check_input(item)
        with self._on_device():
            return self._process_checked(batch)

    def _on_device(self) -> ContextManager:
        """Make this engine's GPU and stream the current ones: events and graph captures use
        them, and a node with several engines calls each from its own thread."""
        if self.device.type != 'cuda':
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        stack.enter_context(torch.cuda.device(self.device))
        stack.enter_context(torch.cuda.stream(self._stream))
        return stack

    def _process_checked(self, batch: Sequence[EngineInput]) -> List[EngineOutput]:
        groups: Dict[tuple, List[int]] = {}
        for i, item in enumerate(batch):
            key = (item.lr_rgb.shape, int(item.scale), tuple(int(v) for v in item.orig_size))
            groups.setdefault(key, []).append(i)
        outputs: List[Optional[EngineOutput]] = [None] * len(batch)
        for (_, scale, (width, height)), indices in groups.items():
            alphas = [batch[i].overlay_alpha if self.overlays_on_device else None
                      for i in indices]
            masks, overlays, timings = self._run_group([batch[i].lr_rgb for i in indices],
                                                       scale, (height, width), alphas)
            for i, mask, overlay in zip(indices, masks, overlays):
                outputs[i] = EngineOutput(mask, dict(timings), overlay)
        return outputs

    def process_isolated(self, batch: Sequence[EngineInput]
                         ) -> List[Union[EngineOutput, EngineError]]:
        """Like `process`, but a frame the engine refuses fails alone, as its EngineError.

        A fleet batch holds frames of different robots: one robot's bad frame (a scale without
        a model, a foreign network failing on its size) must not reject the others. Inputs
        are checked first; if the batch still fails, each frame is run alone to find which.
        """
        results: List[Union[EngineOutput, EngineError, None]] = [None] * len(batch)
        good = []
        for i, item in enumerate(batch):
            try:
                self._check_input(item)
                good.append(i)
            except EngineError as err:
                results[i] = err
        try:
            for i, output in zip(good, self.process([batch[i] for i in good])):
                results[i] = output
        except EngineError as err:
            for i in good:
                results[i] = err if len(good) == 1 else self._process_alone(batch[i])
        return results

    def _process_alone(self, item: EngineInput) -> Union[EngineOutput, EngineError]:
        try:
            return self.process([item])[0]
        except EngineError as err:
            return err

    def segment_hr(self, rgb: np.ndarray) -> np.ndarray:
        """Mask uint8 (H, W) of a full-resolution RGB uint8 (H, W, 3) image (no SR)."""
        height, width = rgb.shape[:2]
        return self.process([EngineInput(rgb, 1, (width, height))])[0].mask

    def super_resolve(self, lr_rgb: np.ndarray, scale: int) -> np.ndarray:
        """RGB uint8 (scale*h, scale*w, 3) from (h, w, 3): the SR model (or bilinear) alone."""
        self._check_input(EngineInput(lr_rgb, scale, lr_rgb.shape[1::-1]))
        size = (scale * lr_rgb.shape[0], scale * lr_rgb.shape[1])
        with self._on_device(), torch.inference_mode(), self._autocast():
            hr = self._sr(self._upload([lr_rgb]), scale, size)  # (1, 3, sh, sw) in [0, 1]
            hr = hr.float().mul(255.0).round_().clamp_(0.0, 255.0).to(torch.uint8)
            return hr[0].permute(1, 2, 0).contiguous().cpu().numpy()  # -> (sh, sw, 3)

    def _load_seg(self, path: str) -> SegModel:
        """Load the segmentation model; SegModelError (a CheckpointError) passes through.

        Our ICNet is fused, densified, made channels-last and compiled like the SR networks; a
        foreign network runs as it was saved (torch.export programs can still be compiled).
        """
        seg = load_seg_model(path, self.device)
        if seg.kind == 'icnet':
            seg.module = self._optimise(fuse_batchnorm(seg.module))  # one kernel less per conv
        elif seg.kind == 'export' and self.config.compile:
            seg.module = torch.compile(seg.module, dynamic=False)
        elif self.config.compile:
            _LOG.info('%s: TorchScript modules are not recompiled (compile applies to ICNet '
                      'and torch.export programs)', path)
        return seg

    def _load_scale_seg(self, scale: int, path: str) -> SegModel:
        """A segmentation net for one SR scale; it must label the classes of the main one."""
        if scale not in ALL_SCALES or scale == 1:
            raise EngineError(f'{path}: a per-scale segmentation net needs a scale in 2..4, '
                              f'got {scale}')
        seg = self._load_seg(path)
        try:
            require_same_classes(seg, self.seg_model)
        except SegModelError as exc:
            raise EngineError(str(exc)) from exc
        return seg

    def _load(self, path: str, model_type: str, scale: Optional[int] = None) -> nn.Module:
        """Load a checkpoint onto the device; CheckpointError (missing/corrupt) passes through."""
        model, ckpt = load_checkpoint(path)
        if ckpt['model_type'] != model_type:
            raise EngineError(f"{path} holds a '{ckpt['model_type']}' network, "
                              f"expected '{model_type}'")
        if scale is not None and model.config.scale != scale:
            raise EngineError(f'{path} is an x{model.config.scale} SR model but is configured '
                              f'for x{scale}')
        return self._optimise(model.to(self.device))

    def _optimise(self, model: nn.Module) -> nn.Module:
        """Device-specific rewrites of one of our networks (same outputs), then compile."""
        if self.device.type == 'cuda':
            model = densify_group_convs(model)  # CARN-M: dense beats grouped on tensor cores
        if self._channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.config.compile:
            model = torch.compile(model, dynamic=False)
        return model

    def _warmup(self) -> None:
        """Each scale and warm-up batch size at warmup_size: lazy init, autotuning, compiling."""
        width, height = self.config.warmup_size
        for scale in [s for s in self.supported_scales() if s in self.config.warmup_scales]:
            lr = np.zeros((max(1, height // scale), max(1, width // scale), 3), np.uint8)
            # Other batch sizes matter only where each one is compiled or captured.
            batches = self.config.warmup_batches if self._pad_batches else (1,)
            for batch in sorted({padded_size(b, self._pad_batches) for b in batches}):
                self.process([EngineInput(lr, scale, (width, height))] * batch)

    def _check_input(self, item: EngineInput) -> None:
        """Raise EngineError naming what is wrong with one input."""
        img = item.lr_rgb
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 \
                or img.shape[2] != 3 or min(img.shape[:2]) < 1:
            raise EngineError(f'lr_rgb must be uint8 (h, w, 3), got '
                              f'{getattr(img, "dtype", type(img))} {getattr(img, "shape", "")}')
        if len(item.orig_size) != 2 or min(item.orig_size) < 1:
            raise EngineError(f'orig_size must be (W, H) > 0, got {item.orig_size}')
        if item.overlay_alpha is not None and not 0.0 <= item.overlay_alpha <= 1.0:
            raise EngineError(f'overlay_alpha must be in [0, 1], got {item.overlay_alpha}')
        scale = item.scale
        if scale not in ALL_SCALES:
            raise EngineError(f'scale must be one of {ALL_SCALES}, got {scale}')
        if scale != 1 and self.config.sr_mode == 'model' and scale not in self.sr_models:
            raise EngineError(f'no SR model for x{scale}: sr_checkpoints covers '
                              f'{sorted(self.sr_models) or "no scale"}; add a checkpoint for '
                              f"x{scale} or use sr_mode='bilinear'")

    def _autocast(self) -> ContextManager:
        """Mixed precision on the device; the weight cache stays off so CUDA graphs can capture."""
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype, cache_enabled=False)

    def _upload(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """uint8 (h, w, 3) images -> float (B, 3, h, w) in [0, 1] on the device."""
        host = torch.from_numpy(np.stack(images))  # (B, h, w, 3) uint8
        if self.device.type == 'cuda':
            host = host.pin_memory()  # async DMA; the uint8 copy is 4x smaller than float
        x = host.to(self.device, non_blocking=True).permute(0, 3, 1, 2)  # -> (B, 3, h, w)
        x = x.float().div_(255.0)  # keeps the NHWC strides of the permuted view
        return x if self._channels_last else x.contiguous()

    def _sr(self, lr: torch.Tensor, scale: int, size: Tuple[int, int]) -> torch.Tensor:
        """(B, 3, h, w) -> (B, 3, H, W) = size: SR model (or bilinear), then fit to size."""
        hr = lr
        if scale != 1 and self.config.sr_mode == 'model':
            hr = self.sr_models[scale](lr).clamp(0.0, 1.0)  # (B, 3, h, w) -> (B, 3, sh, sw)
        if tuple(hr.shape[-2:]) != tuple(size):
            # bilinear mode, or s*h != H when the robot's size was not divisible by s.
            shrink = hr.shape[-2] > size[0] or hr.shape[-1] > size[1]
            hr = F.interpolate(hr, size=size, mode='bilinear', align_corners=False,
                               antialias=shrink)
        return hr

    def _seg(self, hr: torch.Tensor, lr: torch.Tensor, scale: int,
             pyramid_reuse: bool) -> torch.Tensor:
        """(B, 3, H, W) -> class ids uint8 (B, H, W); ICNet reuses the LR frame as a level."""
        seg_model = self.seg_scale_models.get(scale, self.seg_model)
        pyramid = None
        if seg_model.supports_pyramid and pyramid_reuse and scale in PYRAMID_FACTORS:
            pyramid = {scale: lr}
        try:
            logits = seg_model(hr, pyramid)  # (B, 3, H, W) -> (B, K, H, W)
        except SegModelError as exc:  # a foreign network misbehaved on this input
            raise EngineError(str(exc)) from exc
        return logits.argmax(dim=1).to(torch.uint8)

    def _run_group(self, images: List[np.ndarray], scale: int, size: Tuple[int, int],
                   alphas: Sequence[Optional[float]] = ()
                   ) -> Tuple[np.ndarray, List[Optional[np.ndarray]], Dict[str, float]]:
        """One batch of equal-shape frames: upload, SR, seg, download.

        Returns masks (B, H, W), the overlays of the frames with an alpha in `alphas` (else
        None) and the timings.
        """
        start = time.perf_counter()
        clock = _Clock(self.device)
        count = len(images)
        images = list(images) + [images[-1]] * (padded_size(count, self._pad_batches) - count)
        with torch.inference_mode(), self._autocast():
            lr = self._upload(images)
            mask = self._run_device(lr, scale, size, clock)
            wanted = list(alphas)[:count] + [None] * (count - len(alphas))
            overlays = [None if alpha is None else device_overlay(
                lr[i], mask[i], self._palette, alpha, self.ignore_index)
                for i, alpha in enumerate(wanted)]
            masks = mask[:count].cpu().numpy()  # waits for the device
            overlays = [None if o is None else o.cpu().numpy() for o in overlays]
        sr_ms, seg_ms = clock.intervals_ms()
        return masks, overlays, {'sr': sr_ms, 'seg': seg_ms,
                                 'total': (time.perf_counter() - start) * 1e3}

    def _run_device(self, lr: torch.Tensor, scale: int, size: Tuple[int, int],
                    clock: _Clock) -> torch.Tensor:
        """SR then seg on the device, eagerly or by replaying captured CUDA graphs."""
        reuse = bool(self.config.pyramid_reuse)  # read once: the node may set it meanwhile
        graphs = self._graphs_for(lr, scale, size, reuse) if self._use_graphs() else None
        if graphs is None:
            clock.mark()
            hr = self._sr(lr, scale, size)
            clock.mark()
            mask = self._seg(hr, lr, scale, reuse)
            clock.mark()
            return mask
        graphs.static_lr.copy_(lr)
        clock.mark()
        if graphs.sr_graph is not None:
            graphs.sr_graph.replay()
        clock.mark()
        graphs.seg_graph.replay()
        clock.mark()
        return graphs.static_mask

    def _use_graphs(self) -> bool:
        """CUDA graphs only where they exist (compiled models are captured like eager ones)."""
        return self.config.cuda_graphs and self.device.type == 'cuda'

    def _graphs_for(self, lr: torch.Tensor, scale: int, size: Tuple[int, int],
                    reuse: bool) -> Optional[_Graphs]:
        """Return the cached graphs for this key, captured on first use; None -> run eagerly.

        A graph replays the pyramid choice it was captured with, so the flag is in the key;
        when the cache is full, graphs of the other choice (a live change) make room.
        """
        key = (tuple(lr.shape), scale, tuple(size), reuse)
        if key not in self._graphs:
            if len(self._graphs) >= MAX_CUDA_GRAPHS:
                for stale in [k for k in self._graphs if k[-1] != reuse]:
                    del self._graphs[stale]
            if len(self._graphs) >= MAX_CUDA_GRAPHS:
                return None
            self._graphs[key] = self._capture(lr, scale, size, reuse)
        return self._graphs[key]

    def _capture(self, lr: torch.Tensor, scale: int, size: Tuple[int, int],
                 reuse: bool) -> Optional[_Graphs]:
        """Capture SR and seg as two graphs sharing one memory pool; None if capture fails."""
        try:
            static_lr = lr.clone()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm up off the capture: autotuning, lazy init
                for _ in range(3):
                    self._seg(self._sr(static_lr, scale, size), static_lr, scale, reuse)
            torch.cuda.current_stream().wait_stream(side)
            sr_graph, static_hr = None, static_lr
            if scale != 1 or tuple(lr.shape[-2:]) != tuple(size):
                sr_graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(sr_graph):
                    static_hr = self._sr(static_lr, scale, size)
            seg_graph = torch.cuda.CUDAGraph()
            pool = sr_graph.pool() if sr_graph is not None else None
            with torch.cuda.graph(seg_graph, pool=pool):
                static_mask = self._seg(static_hr, static_lr, scale, reuse)
            return _Graphs(static_lr, static_mask, sr_graph, seg_graph)
        except RuntimeError as exc:
            _LOG.warning('CUDA graph capture failed for batch %s x%d (%s); running eagerly',
                         tuple(lr.shape), scale, exc)
            return None
