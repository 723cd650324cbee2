"""Run a clip through one uplink configuration exactly as the system does, and score it.

Shared by `cloudseg profile` and `cloudseg bench-stream`. For each configuration the frames go
through the robot's real `EdgePipeline` (selector, downsample, encoder; frame i is taken at
t = i / fps), the cloud's real `StreamReceiver` (decoding), then the segmentation engine. A frame
the selector skips shows the last mask the robot received (the video-analytics convention), so
accuracy is measured on every frame, and skipping costs accuracy where the scene moved. Each
configuration gets a fresh encoder and decoder fed in frame order, so an H.264 stream is one
IDR followed by P-frames predicted from the frames actually sent; a frame the selector skips is
never encoded, as on the robot.

Scores: agreement-mIoU against full-resolution inference on the original frames (computed once
per clip and cached), and mIoU against labels when the clip has them (void ignored). Both are
dataset-level (one confusion matrix over all frames, not a mean of per-frame values). Bitrate is
the payload bytes sent * 8 / clip duration.

Inference dominates the cost, and a mask depends only on the decoded LR frame, its scale and the
cloud variant (SR weights, pyramid reuse). Masks are therefore cached by a digest of the decoded
pixels: the frame-rate and selector variants of a JPEG configuration send a subset of the
identical payloads of its all-frames run and cost no inference at all. H.264 payloads depend on
which frames were sent before, so those variants mostly miss the cache and simply run. With
`--cache DIR` masks also persist on disk, keyed by the hashes of the weights that made them, so
`cloudseg profile` after `cloudseg bench-stream` (or a rerun) only pays for new content.
"""
import argparse
from collections import OrderedDict
from dataclasses import dataclass, field
import hashlib
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from cloudseg_ros.core.codecs import (CODECS, check_crf, check_jpeg_quality, check_x264_preset,
                                      EDGE_DEFAULT_X264_PRESET, EDGE_X264_PRESETS)
from cloudseg_ros.core.edge_pipeline import EdgeConfig, EdgePipeline
from cloudseg_ros.core.metrics import IGNORE_INDEX, RunningConfusion
from cloudseg_ros.core.profile import ProfileEntry, StreamConfig
from cloudseg_ros.core.receiver import FrameMeta, ReceiveError, StreamReceiver
from cloudseg_ros.core.selector import SelectorConfig
from cloudseg_ros.core.sources import SourceError, frame_files, open_source
from cloudseg_ros.training.progress import Progress, format_duration

DEFAULT_FPS = 15.0
LABEL_EXTENSIONS = ('.png', '.bmp', '.tif', '.tiff')


class StreamInputError(ValueError):
    """The clip, its labels or the models cannot be used: `cloudseg bench-stream` and
    `profile` report it in one line (exit code 2), without a traceback."""


# --------------------------------------------------------------------------------------------
# Clips


@dataclass
class Clip:
    """Frames of one recording in time order, their rate, and per-frame labels if any."""

    frames: List[np.ndarray]  # RGB uint8 (H, W, 3)
    fps: float
    name: str
    labels: Optional[List[np.ndarray]] = None  # uint8 (H, W) class ids, IGNORE_INDEX = void

    @property
    def duration_s(self) -> float:
        """Length of the clip: one frame period per frame."""
        return len(self.frames) / self.fps


def load_clip(path: str, labels: Optional[str] = None, max_frames: Optional[int] = None,
              fps: Optional[float] = None, topic: str = '', skip_frames: int = 0) -> Clip:
    """Read a video file, image folder (CamVid split: `<split>/images`) or bag as a Clip.

    The first `skip_frames` frames are read and dropped (e.g. the frames `cloudseg adapt`
    trained on, so that the clip is its held-out share); `max_frames` counts the frames kept.

    `labels` is a folder of label PNGs named like the images (the `labels/` folder itself or
    the split holding it); when None, a split's own `labels/` folder is used if it exists.
    Image folders play at `fps` (default 15); videos and bags (image `topic`, default the only
    one) at their stored rate unless `fps` is given.
    Raises StreamInputError (a ValueError) when the source cannot be read, or labels are
    missing for some frame or do not match its size.
    """
    if skip_frames < 0:
        raise StreamInputError(f'skip_frames must be >= 0, got {skip_frames}')
    try:
        source = open_source(path, loop=False, topic=topic)
    except SourceError as err:
        raise StreamInputError(str(err)) from err
    try:
        frames = []
        for index, frame in enumerate(source.frames()):
            if index < skip_frames:
                continue  # dropped at once: memory stays bounded by the frames kept
            frames.append(frame)
            if max_frames and len(frames) >= max_frames:
                break
        rate = fps or source.native_fps or DEFAULT_FPS
        skipped = source.skipped
    finally:
        source.close()
    if not frames:
        after = f' after skipping {skip_frames}' if skip_frames else ''
        raise StreamInputError(f'{path}: no frames{after}')
    label_dir = _label_dir(path, labels)
    masks = None
    if label_dir is not None:
        if skipped:
            raise StreamInputError(f'{path}: {skipped} unreadable frame(s); cannot pair labels')
        masks = _read_labels(path, label_dir, frames, skip_frames)
    name = os.path.basename(os.path.normpath(path))
    return Clip(frames, float(rate), name, masks)


def _label_dir(path: str, labels: Optional[str]) -> Optional[str]:
    """The folder holding label files, or None for an unlabeled clip."""
    if labels is None:
        candidate = os.path.join(path, 'labels')
        return candidate if os.path.isdir(path) and os.path.isdir(candidate) else None
    nested = os.path.join(labels, 'labels')
    folder = nested if os.path.isdir(nested) else labels
    if not os.path.isdir(folder):
        raise StreamInputError(f"labels folder '{labels}' does not exist")
    return folder


def _read_labels(path: str, label_dir: str, frames: List[np.ndarray],
                 skip_frames: int = 0) -> List[np.ndarray]:
    """One label per frame: by image stem for folders, by sorted order for videos (both
    after the `skip_frames` dropped frames)."""
    label_files = {os.path.splitext(name)[0]: os.path.join(label_dir, name)
                   for name in sorted(os.listdir(label_dir))
                   if name.lower().endswith(LABEL_EXTENSIONS)}
    if os.path.isdir(path):
        kept = frame_files(path)[skip_frames:skip_frames + len(frames)]
        stems = [os.path.splitext(os.path.basename(p))[0] for p in kept]
    else:
        stems = sorted(label_files)[skip_frames:skip_frames + len(frames)]
    missing = [stem for stem in stems if stem not in label_files]
    if missing or len(stems) != len(frames):
        raise StreamInputError(f'{label_dir}: labels for {len(stems) - len(missing)} of '
                               f'{len(frames)} frames (missing e.g. {missing[:3]})')
    masks = []
    for stem, frame in zip(stems, frames):
        mask = cv2.imread(label_files[stem], cv2.IMREAD_UNCHANGED)
        if mask is None or mask.shape[:2] != frame.shape[:2]:
            raise StreamInputError(f'{label_files[stem]}: unreadable or not '
                                   f'{frame.shape[1]}x{frame.shape[0]} like its frame')
        masks.append((mask[..., 0] if mask.ndim == 3 else mask).astype(np.uint8))
    return masks


# --------------------------------------------------------------------------------------------
# Configurations and results


@dataclass(frozen=True)
class CloudVariant:
    """How the cloud turns a received frame into a mask (what the edge config does not say)."""

    sr: str = 'aware'  # 'aware' | 'base' (CARN-M weights) | 'bilinear' (plain resize)
    pyramid_reuse: bool = True  # feed the LR frame to ICNet's branch of its scale

    @property
    def name(self) -> str:
        """Short label, e.g. 'aware+reuse' or 'bilinear'."""
        return self.sr + ('+reuse' if self.pyramid_reuse else '')


def edge_config(config: StreamConfig,
                h264_preset: str = EDGE_DEFAULT_X264_PRESET) -> EdgeConfig:
    """The robot's EdgeConfig for a profiled configuration (quality -> JPEG q or H.264 CRF)."""
    quality = {'jpeg_quality': config.quality} if config.codec == 'jpeg' \
        else {'h264_crf': config.quality}
    return EdgeConfig(scale=config.scale, codec=config.codec, max_rate_hz=config.max_rate_hz,
                      useful_threshold=config.useful_threshold,
                      key_threshold=config.key_threshold, h264_preset=h264_preset,
                      **quality).validate()


def describe(config: StreamConfig, variant: CloudVariant) -> Dict[str, Any]:
    """Plain-JSON description of a (configuration, cloud variant) pair."""
    full_res = config.scale == 1  # no SR and no pyramid level to reuse at scale 1
    return {'name': config.name, 'scale': config.scale, 'codec': config.codec,
            'quality': config.quality, 'max_rate_hz': float(config.max_rate_hz),
            'useful_threshold': float(config.useful_threshold),
            'key_threshold': float(config.key_threshold),
            'sr': 'none' if full_res else variant.sr,
            'pyramid_reuse': False if full_res else variant.pyramid_reuse}


@dataclass
class StreamResult:
    """What one configuration cost and what it was worth on the clip."""

    config: StreamConfig
    variant: CloudVariant
    kbps: float  # payload bits sent / clip duration / 1000
    accuracy: float  # agreement-mIoU vs full-resolution inference on the original frames
    labeled_miou: Optional[float]  # mIoU vs labels (None without labels)
    frames: int
    frames_sent: int
    bytes_total: int
    engine_frames: int  # masks computed for this run (the rest came from the cache)
    rejected: int = 0  # frames the receiver refused (shown as the previous mask)
    keyframes: int = 0  # frames sent that decode on their own (every JPEG; H.264 IDRs)
    # Per frame: index of the frame whose mask it shows (-1: nothing received yet).
    mask_source: List[int] = field(default_factory=list)

    def profile_entry(self) -> ProfileEntry:
        """The result as a profile entry."""
        return ProfileEntry(self.config, self.kbps, self.accuracy, self.labeled_miou)


@dataclass
class _Received:
    """A decoded frame on its way to the engine."""

    index: int  # frame index in the clip
    rgb: np.ndarray  # decoded LR frame
    scale: int
    orig_size: Tuple[int, int]  # (W, H)


EngineFactory = Callable[[CloudVariant], Any]


def models_meta(evaluator: 'StreamEvaluator') -> Dict[str, Any]:
    """The weights the evaluator's engines loaded (hashed at load time), if the factory says."""
    describe = getattr(evaluator.engine_factory, 'describe', None)
    return describe() if describe is not None else {}


class ModelEngineFactory:
    """Builds SegEngines from the weights in `models_dir` and remembers what it loaded.

    Each weight file is hashed when its engine is built, so a result file names the weights
    that produced it even if someone replaces a file during a long run, and the masks of the
    disk cache are keyed by them.
    """

    def __init__(self, models_dir: str, device: str = 'auto', precision: str = 'auto',
                 seg_model: Optional[str] = None) -> None:
        self.models_dir = models_dir
        self.seg_model = seg_model  # None: models_dir/seg_icnet.pt
        self.device = device
        self.precision = precision
        self.loaded: Dict[CloudVariant, Dict[int, str]] = {}  # scale -> file id (0: seg)
        self.loaded_scale_segs: Dict[CloudVariant, Dict[int, str]] = {}  # scale -> file id
        self._engines: Dict[CloudVariant, Any] = {}

    def __call__(self, variant: CloudVariant) -> Any:
        """A new engine for `variant` (missing SR scales are left out)."""
        from cloudseg_ros.inference.engine import EngineConfig, SegEngine
        from cloudseg_ros.inference.model_files import (seg_checkpoint, seg_scale_checkpoints,
                                                        sr_checkpoints)
        from cloudseg_ros.inference.seg_models import sidecar_yaml
        from cloudseg_ros.nets.checkpoint import CheckpointError
        seg = self.seg_model or seg_checkpoint(self.models_dir)
        srs = sr_checkpoints(self.models_dir, variant.sr)
        seg_id = _file_id(seg)
        if os.path.isfile(sidecar_yaml(seg)):  # its YAML (normalisation, ...) shapes masks too
            seg_id += ' + ' + _file_id(sidecar_yaml(seg))
        self.loaded[variant] = {0: seg_id, **{s: _file_id(p) for s, p in srs.items()}}
        scale_segs = seg_scale_checkpoints(self.models_dir, self.seg_model, variant.sr)
        self.loaded_scale_segs[variant] = {s: _file_id(p) for s, p in scale_segs.items()}
        config = EngineConfig(
            seg_checkpoint=seg, sr_checkpoints=srs, seg_scale_checkpoints=scale_segs,
            sr_mode='bilinear' if variant.sr == 'bilinear' else 'model', device=self.device,
            precision=self.precision, pyramid_reuse=variant.pyramid_reuse,
            warmup=False)  # nothing here is timed, so a warm-up would only cost time
        try:
            engine = SegEngine(config)
        except CheckpointError as err:  # missing or unusable weights: the user's to fix
            raise StreamInputError(str(err)) from err
        self._engines[variant] = engine
        return engine

    def identity(self, variant: CloudVariant, scale: int) -> str:
        """Everything besides the input that a mask of this variant and scale depends on."""
        engine = self._engines[variant]
        parts = [self.loaded[variant][0], str(engine.device.type), str(engine.dtype)]
        if scale != 1:
            parts += [variant.name, self.loaded[variant].get(scale, 'bilinear')]
            if scale in self.loaded_scale_segs[variant]:
                parts.append(self.loaded_scale_segs[variant][scale])
        return '|'.join(parts)

    def describe(self) -> Dict[str, Any]:
        """Plain-YAML record of the weights each variant loaded."""
        meta: Dict[str, Any] = {'dir': os.path.abspath(self.models_dir)}
        for variant, files in sorted(self.loaded.items(), key=lambda item: item[0].name):
            meta['seg'] = files[0]
            if variant.sr != 'bilinear':
                meta[variant.name] = {f'x{s}': f for s, f in files.items() if s}
            for s, f in self.loaded_scale_segs[variant].items():
                meta.setdefault('seg_per_scale', {})[f'x{s}'] = f
        return meta


def _file_id(path: str) -> str:
    """'name sha256:<12 hex>' of a file, or 'name (missing)'."""
    if not os.path.isfile(path):
        return f'{os.path.basename(path)} (missing)'
    digest = hashlib.sha256()
    with open(path, 'rb') as stream:
        for block in iter(lambda: stream.read(1 << 20), b''):
            digest.update(block)
    return f'{os.path.basename(path)} sha256:{digest.hexdigest()[:12]}'


# --------------------------------------------------------------------------------------------
# Evaluation


class MaskCache:
    """Least-recently-used masks keyed by (cloud variant, scale, size, decoded-pixel digest)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, int(capacity))
        self._masks: 'OrderedDict[tuple, np.ndarray]' = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple) -> Optional[np.ndarray]:
        """The cached mask or None (counted as a hit or a miss)."""
        mask = self._masks.get(key)
        if mask is None:
            self.misses += 1
            return None
        self._masks.move_to_end(key)
        self.hits += 1
        return mask

    def put(self, key: tuple, mask: np.ndarray) -> None:
        """Store a mask, evicting the least recently used beyond capacity."""
        self._masks[key] = mask
        self._masks.move_to_end(key)
        while len(self._masks) > self.capacity:
            self._masks.popitem(last=False)


class DiskMaskCache:
    """Masks as PNG files under `folder`, so later runs (profile, then bench-stream) reuse them.

    The file name hashes the mask key together with the engine identity (weight-file hashes,
    device, dtype), so new weights or another precision never read stale masks.
    """

    def __init__(self, folder: str) -> None:
        os.makedirs(folder, exist_ok=True)
        self.folder = folder
        self.hits = 0

    def _path(self, identity: str, key: tuple) -> str:
        name = hashlib.blake2b(repr((identity, key)).encode(), digest_size=20).hexdigest()
        return os.path.join(self.folder, name[:2], name + '.png')

    def get(self, identity: str, key: tuple) -> Optional[np.ndarray]:
        """The stored mask or None."""
        path = self._path(identity, key)
        mask = cv2.imread(path, cv2.IMREAD_UNCHANGED) if os.path.isfile(path) else None
        self.hits += mask is not None
        return mask

    def put(self, identity: str, key: tuple, mask: np.ndarray) -> None:
        """Store a mask (lossless PNG; written then renamed, so readers never see half)."""
        path = self._path(identity, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        temporary = f'{path}.{os.getpid()}.tmp.png'
        cv2.imwrite(temporary, mask)
        os.replace(temporary, path)


class StreamEvaluator:
    """Evaluates configurations on one clip; engines, reference masks and masks are cached."""

    def __init__(self, clip: Clip, engine_factory: EngineFactory, batch_size: int = 1,
                 cache_frames: Optional[int] = None, cache_dir: Optional[str] = None,
                 log: Optional[Callable[[str], None]] = None,
                 h264_preset: str = EDGE_DEFAULT_X264_PRESET) -> None:
        """`cache_frames` defaults to two clips' worth of masks (see run_many's ordering).
        `h264_preset` is the robot's x264 preset for every H.264 configuration.

        `cache_dir` also keeps masks on disk across runs; it needs a factory with an
        `identity(variant, scale)` method (ModelEngineFactory) and is ignored otherwise.
        """
        self.clip = clip
        self.engine_factory = engine_factory
        self.h264_preset = check_x264_preset(h264_preset, EDGE_X264_PRESETS)
        self.batch_size = max(1, int(batch_size))
        self.cache = MaskCache(cache_frames or 2 * len(clip.frames))
        has_identity = hasattr(engine_factory, 'identity')
        self.disk = DiskMaskCache(cache_dir) if cache_dir and has_identity else None
        self.log = log or _print_flushed
        self._engines: Dict[CloudVariant, Any] = {}
        self._reference: Optional[List[np.ndarray]] = None
        self.engine_frames = 0  # masks computed so far, reference masks included

    def engine(self, variant: CloudVariant) -> Any:
        """The engine serving `variant`, built on first use."""
        if variant not in self._engines:
            self._engines[variant] = self.engine_factory(variant)
        return self._engines[variant]

    def supported_scales(self, variant: CloudVariant) -> List[int]:
        """Scales the variant's engine can serve (SR weights that exist, or all in bilinear)."""
        return list(self.engine(variant).supported_scales())

    def reference_masks(self) -> List[np.ndarray]:
        """Full-resolution masks of the original frames (the agreement reference), once."""
        if self._reference is None:
            # Any engine will do (they share the segmentation weights); the bilinear one needs
            # no SR weights, so it exists whenever the segmentation network does. Scale 1 with
            # the original frame is exactly SegEngine.segment_hr, and goes through the caches.
            engines = list(self._engines)
            variant = engines[0] if engines else CloudVariant('bilinear', False)
            start = time.perf_counter()
            frames = [_Received(i, rgb, 1, (rgb.shape[1], rgb.shape[0]))
                      for i, rgb in enumerate(self.clip.frames)]
            self._reference = self._infer(variant, frames)
            self.log(f'reference: full-resolution masks of {len(frames)} frames in '
                     f'{format_duration(time.perf_counter() - start)}')
        return self._reference

    def reference_labeled_miou(self) -> Optional[float]:
        """Labeled mIoU of full-resolution inference on the original frames (the baseline)."""
        if self.clip.labels is None:
            return None
        return self._labeled(self.reference_masks())

    def run(self, config: StreamConfig, variant: CloudVariant) -> StreamResult:
        """Stream the clip through one configuration and score every frame."""
        reference = self.reference_masks()
        received, bytes_total, rejected, keyframes = self._transmit(config)
        engine_before = self.engine_frames
        masks = self._infer(variant, received)
        shown, source = self._hold_last(received, masks, len(reference), reference[0].shape)
        agreement = RunningConfusion(self._num_classes())
        for mask, ref in zip(shown, reference):
            agreement.update(mask, ref)
        kbps = bytes_total * 8.0 / self.clip.duration_s / 1000.0
        return StreamResult(
            config=config, variant=variant, kbps=kbps, accuracy=agreement.mean_iou(),
            labeled_miou=self._labeled(shown), frames=len(self.clip.frames),
            frames_sent=len(received) + rejected, bytes_total=bytes_total,
            engine_frames=self.engine_frames - engine_before, rejected=rejected,
            keyframes=keyframes, mask_source=source)

    def run_many(self, jobs: Sequence[Tuple[StreamConfig, CloudVariant]],
                 label: str = 'configs') -> List[StreamResult]:
        """Run every job, in an order that maximises cache reuse; results in job order.

        Jobs that differ only in frame rate or selector thresholds run back to back, so the
        variants find their all-frames run's masks in the cache. Prints one flushed progress
        line per configuration (done / total, rate, ETA).
        """
        order = sorted(range(len(jobs)), key=lambda i: _content_group(*jobs[i]))
        self.reference_masks()
        progress = Progress(len(jobs), label=label, unit='cfg')
        results: List[Optional[StreamResult]] = [None] * len(jobs)
        for i in order:
            result = self.run(*jobs[i])
            results[i] = result
            progress.update(values={'cfg': f'{result.config.name}/{result.variant.name}',
                                    'kbps': round(result.kbps, 1),
                                    'agree': round(result.accuracy, 4),
                                    'sent': result.frames_sent, 'new': result.engine_frames})
        return results

    def _num_classes(self) -> int:
        """Class count of the segmentation network (every engine shares it)."""
        return int(next(iter(self._engines.values())).num_classes)

    def _labeled(self, masks: Sequence[np.ndarray]) -> Optional[float]:
        """mIoU of `masks` against the clip's labels, void ignored; None without labels."""
        if self.clip.labels is None:
            return None
        confusion = RunningConfusion(self._num_classes(), IGNORE_INDEX)
        for mask, label in zip(masks, self.clip.labels):
            confusion.update(mask, label)
        return confusion.mean_iou()

    def _transmit(self, config: StreamConfig) -> Tuple[List[_Received], int, int, int]:
        """Robot -> cloud for every frame: (received frames, payload bytes, rejected, keys).

        One encoder and one decoder per configuration, fed in frame order: H.264 P-frames are
        predicted from, and decoded against, the frames sent before them. A skipped frame never
        reaches the encoder.
        """
        pipeline = EdgePipeline(edge_config(config, self.h264_preset))
        receiver = StreamReceiver()
        received: List[_Received] = []
        bytes_total = rejected = keyframes = 0
        for index, rgb in enumerate(self.clip.frames):
            t_s = index / self.clip.fps
            frame = pipeline.process(rgb, t_s)
            if frame is None:
                continue
            bytes_total += len(frame.data)
            keyframes += frame.keyframe
            meta = FrameMeta(seq=len(received) + rejected, kind=int(frame.kind),
                             codec=frame.codec, width=frame.width, height=frame.height,
                             orig_width=frame.orig_width, orig_height=frame.orig_height,
                             scale=frame.scale, keyframe=frame.keyframe, stamp_s=t_s)
            try:
                decoded = receiver.receive(meta, frame.data, arrival_s=t_s)
            except ReceiveError:
                rejected += 1  # the robot keeps showing its previous mask
                continue
            received.append(_Received(index, decoded.rgb, frame.scale,
                                      (frame.orig_width, frame.orig_height)))
        return received, bytes_total, rejected, keyframes

    def _infer(self, variant: CloudVariant, received: Sequence[_Received]) -> List[np.ndarray]:
        """Masks of the received frames: from the caches, else from the engine in batches."""
        keys = [_mask_key(variant, item) for item in received]
        masks: List[Optional[np.ndarray]] = [self._cached(variant, k) for k in keys]
        todo: Dict[tuple, List[int]] = {}  # the same content twice in one run is computed once
        for i, mask in enumerate(masks):
            if mask is None:
                todo.setdefault(keys[i], []).append(i)
        pending = list(todo.values())
        for start in range(0, len(pending), self.batch_size):
            chunk = pending[start:start + self.batch_size]
            outputs = self._process(variant, [received[group[0]] for group in chunk])
            for group, mask in zip(chunk, outputs):
                self._store(variant, keys[group[0]], mask)
                for i in group:
                    masks[i] = mask
        return masks

    def _cached(self, variant: CloudVariant, key: tuple) -> Optional[np.ndarray]:
        """Memory first, then disk (a disk hit is kept in memory too)."""
        mask = self.cache.get(key)
        if mask is None and self.disk is not None:
            mask = self.disk.get(self._identity(variant, key), key)
            if mask is not None:
                self.cache.put(key, mask)
        return mask

    def _store(self, variant: CloudVariant, key: tuple, mask: np.ndarray) -> None:
        """Put a freshly computed mask in the caches."""
        self.cache.put(key, mask)
        if self.disk is not None:
            self.disk.put(self._identity(variant, key), key, mask)

    def _identity(self, variant: CloudVariant, key: tuple) -> str:
        """The factory's engine identity for the key's scale (key[1])."""
        self.engine(variant)  # the identity names the weights its engine loaded
        return self.engine_factory.identity(variant, key[1])

    def _process(self, variant: CloudVariant, items: Sequence[_Received]) -> List[np.ndarray]:
        """One engine call; imported lazily so the stub engines of the tests need no torch."""
        from cloudseg_ros.inference.engine import EngineInput
        batch = [EngineInput(item.rgb, item.scale, item.orig_size) for item in items]
        self.engine_frames += len(batch)
        return [output.mask for output in self.engine(variant).process(batch)]

    @staticmethod
    def _hold_last(received: Sequence[_Received], masks: Sequence[np.ndarray], frames: int,
                   shape: Tuple[int, ...]) -> Tuple[List[np.ndarray], List[int]]:
        """Per-frame masks: a received frame's own, else the last one received before it.

        Before anything arrives (never with the real selector: its first frame is a KEY) the
        robot has no mask; it is scored as all class 0, so it still costs accuracy.
        """
        by_index = {item.index: mask for item, mask in zip(received, masks)}
        last, last_index = np.zeros(shape, np.uint8), -1
        shown: List[np.ndarray] = []
        source: List[int] = []
        for index in range(frames):
            if index in by_index:
                last, last_index = by_index[index], index
            shown.append(last)
            source.append(last_index)
        return shown, source


def _print_flushed(text: str) -> None:
    """Progress goes through pipes and `tee`: flush every line."""
    print(text, flush=True)


def _mask_key(variant: CloudVariant, item: _Received) -> tuple:
    """Cache key: everything a mask depends on. At scale 1 the variant plays no part."""
    digest = hashlib.blake2b(np.ascontiguousarray(item.rgb).data, digest_size=16).digest()
    cloud = None if item.scale == 1 else variant
    return (cloud, item.scale, item.orig_size, item.rgb.shape, digest)


def _content_group(config: StreamConfig, variant: CloudVariant) -> tuple:
    """Jobs sharing this key send (subsets of) the same payloads: run them back to back."""
    cloud = '' if config.scale == 1 else variant.name
    return (cloud, config.codec, config.scale, config.quality)


# --------------------------------------------------------------------------------------------
# Command-line plumbing shared by the tools


def _non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0 (a clear usage error otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'not an integer: {text!r}') from None
    if value < 0:
        raise argparse.ArgumentTypeError(f'must be >= 0, got {value}')
    return value


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Options every streaming evaluation takes: the clip, the models, the device."""
    parser.add_argument('--input', required=True,
                        help='video file, image folder (CamVid split: <split>/images), or '
                             'rosbag2 MCAP file or folder')
    parser.add_argument('--topic', default='',
                        help="image topic of a bag --input ('' = its only image topic)")
    parser.add_argument('--labels', default=None,
                        help='label folder (default: <input>/labels when it exists)')
    parser.add_argument('--max-frames', type=int, default=None, help='use the first N frames')
    parser.add_argument('--skip-frames', type=_non_negative_int, default=0, metavar='N',
                        help='leave out the first N frames, e.g. those `cloudseg adapt` trained '
                             'on (the first round((1 - holdout_frac) x frames)), to stream its '
                             'held-out share only')
    parser.add_argument('--fps', type=float, default=None,
                        help=f'clip frame rate (default: the video\'s, {DEFAULT_FPS:g} for '
                             'image folders)')
    parser.add_argument('--device', default='auto', help="'auto', 'cpu', 'cuda', 'cuda:N'")
    parser.add_argument('--models', default=None,
                        help='weights folder (default: the checkout\'s or installed models/)')
    parser.add_argument('--seg-model', default=None, metavar='PATH',
                        help='segmentation model: our ICNet checkpoint, or TorchScript / .pt2 '
                             'with its YAML beside it (default: <models>/seg_icnet.pt)')
    parser.add_argument('--cache', default=None, metavar='DIR',
                        help='keep masks here across runs (keyed by the weights\' hashes), '
                             'e.g. out/mask_cache')
    parser.add_argument('--batch', type=int, default=0,
                        help='engine batch size (0: 8 on CUDA, 1 on the CPU, where batching '
                             'is slower per frame)')


def add_codec_args(parser: argparse.ArgumentParser, qualities: Sequence[int],
                   crfs: Sequence[int], codecs: Sequence[str] = CODECS) -> None:
    """--codecs, --qualities (JPEG) and --crfs (H.264), with the tool's own defaults."""
    parser.add_argument('--codecs', nargs='+', default=list(codecs), choices=list(CODECS),
                        help=f'codecs to measure (default: {" ".join(codecs)})')
    parser.add_argument('--qualities', type=int, nargs='+', default=list(qualities),
                        help='JPEG qualities 1..100 (with --codecs jpeg)')
    parser.add_argument('--crfs', type=int, nargs='+', default=list(crfs),
                        help='H.264 CRFs 0..51, lower = more bits (with --codecs h264)')
    parser.add_argument('--h264-preset', default=EDGE_DEFAULT_X264_PRESET,
                        choices=list(EDGE_X264_PRESETS),
                        help="the robot's x264 preset (its edge parameter h264_preset; "
                             f'default {EDGE_DEFAULT_X264_PRESET})')


def codec_settings(codecs: Sequence[str], jpeg_qualities: Sequence[int],
                   h264_crfs: Sequence[int]) -> Dict[str, List[int]]:
    """{codec: quality values} of the chosen codecs (JPEG quality, H.264 CRF), validated.

    Raises ValueError naming the first value out of range.
    """
    values = {'jpeg': list(jpeg_qualities), 'h264': list(h264_crfs)}
    checks = {'jpeg': check_jpeg_quality, 'h264': check_crf}
    settings: Dict[str, List[int]] = {}
    for codec in dict.fromkeys(codecs):  # in the order given, without repeats
        for value in values[codec]:
            checks[codec](value)
        settings[codec] = values[codec]
    return settings


def check_selector_settings(useful_thresholds: Sequence[float], key_threshold: float,
                            rates_hz: Sequence[float] = (SelectorConfig.max_rate_hz,)) -> None:
    """ValueError before any frame is streamed when a selector setting could not run.

    The robot's `SelectorConfig` checks each point when it is streamed; a useful threshold
    above the key threshold would otherwise stop a run after minutes of finished points.
    """
    for useful in useful_thresholds:
        for rate in rates_hz:
            try:
                SelectorConfig(useful_threshold=useful, key_threshold=key_threshold,
                               max_rate_hz=rate).validate()
            except ValueError as err:
                raise ValueError(f'selector setting useful {useful:g}, key {key_threshold:g}, '
                                 f'rate {rate:g} Hz: {err}') from err


def usable_scales(evaluator: StreamEvaluator, variant: CloudVariant,
                  scales: Sequence[int]) -> List[int]:
    """The requested scales the variant's engine can serve; prints a note naming the others.

    A scale without SR weights (no `sr_carnm_x{S}_<variant>.pt` in the models folder) is left
    out rather than failing the run: x3 weights, for one, do not always exist.
    """
    supported = set(evaluator.supported_scales(variant))
    dropped = [s for s in scales if s not in supported]
    if dropped:
        print(f'note: no {variant.sr} SR weights for scale(s) {dropped}: left out', flush=True)
    return [s for s in scales if s in supported]


def evaluator_from_args(args: argparse.Namespace) -> StreamEvaluator:
    """An evaluator over the clip, with engines from the models folder, per the options."""
    from cloudseg_ros.inference.engine import resolve_device
    models_dir = args.models or _default_models_dir()
    clip = load_clip(args.input, args.labels, args.max_frames, args.fps, args.topic,
                     args.skip_frames)
    skipped = f' (from frame {args.skip_frames})' if args.skip_frames else ''
    batch = args.batch or (8 if resolve_device(args.device).type == 'cuda' else 1)
    labels = 'with labels' if clip.labels is not None else 'no labels'
    print(f'clip: {args.input}: {len(clip.frames)} frames{skipped} {clip.frames[0].shape[1]}x'
          f'{clip.frames[0].shape[0]} at {clip.fps:g} fps ({clip.duration_s:.1f} s, {labels}); '
          f'models: {models_dir}; device: {args.device}, batch {batch}', flush=True)
    evaluator = StreamEvaluator(clip, ModelEngineFactory(models_dir, args.device,
                                                         seg_model=args.seg_model),
                                batch_size=batch, cache_dir=args.cache,
                                h264_preset=args.h264_preset)
    return evaluator


def _default_models_dir() -> str:
    """model_files.default_models_dir(), or the checkout's models/ where it cannot search."""
    from cloudseg_ros.inference.model_files import default_models_dir
    try:
        return default_models_dir()
    except OSError:
        # ament_index raises OSError (not LookupError) when AMENT_PREFIX_PATH is unset, as in
        # a plain venv without a sourced ROS install.
        return os.path.normpath(os.path.join(os.path.dirname(__file__), '..', '..', 'models'))


def clip_meta(args: argparse.Namespace, evaluator: StreamEvaluator) -> Dict[str, Any]:
    """Plain-YAML/JSON description of the clip and run, for a result file's meta."""
    clip = evaluator.clip
    reference = evaluator.reference_labeled_miou()
    return {'clip': args.input, 'skip_frames': args.skip_frames, 'frames': len(clip.frames),
            'fps': clip.fps,
            'duration_s': round(clip.duration_s, 3),
            'resolution': f'{clip.frames[0].shape[1]}x{clip.frames[0].shape[0]}',
            'labels': clip.labels is not None,
            'date': time.strftime('%Y-%m-%dT%H:%M:%S%z'), 'device': args.device,
            'h264_preset': evaluator.h264_preset,
            'reference_labeled_miou': None if reference is None else round(reference, 4)}
