"""One interface for "a segmentation model": our ICNet checkpoint, or your own network.

`load_seg_model(path, device)` reads any of:

- a cloudseg checkpoint of `model_type: icnet` (`nets.checkpoint`, read with weights_only=True);
  it takes CloudSeg's pyramid (the received LR frame as ICNet's low-resolution branch);
- a TorchScript module (`torch.jit.save`), read by `torch.jit.load`;
- a `torch.export` program (`torch.export.save`, usually `.pt2`), read by `torch.export.load`,

and returns a `SegModel`: `seg(x, pyramid=None)` maps float RGB (B, 3, H, W) in [0, 1] to logits
(B, C, H, W) whichever the file held, and `seg.class_names`, `seg.colors`, `seg.ignore_index`,
`seg.supports_pyramid` describe it. An external network needs a YAML beside it with the same
stem (`mynet.pt2` + `mynet.yaml`):

    class_names: [road, sidewalk, building]   # required: one per output channel
    colors: [[128, 64, 128], [244, 35, 232], [70, 70, 70]]  # optional RGB 0..255 per class
    normalize: {mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}  # or none (default)
    ignore_index: 255                          # optional: the labels' void id, 0..255
    size_multiple: 32                          # optional: pad H, W up to a multiple

An ICNet checkpoint may have one too (class_names, colors, ignore_index only: ICNet normalises
and pads its input itself); without it, 11 classes are CamVid's names and colours.
A network file is code: load only models you trust.
"""
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union
import zipfile

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F
import yaml

from cloudseg_ros.core.metrics import IGNORE_INDEX
from cloudseg_ros.core.palette import CAMVID_NAMES, CAMVID_PALETTE, distinct_palette
from cloudseg_ros.nets.checkpoint import CheckpointError, load_checkpoint

KINDS = ('icnet', 'torchscript', 'export')
MAX_CLASSES = 256  # masks are uint8 class ids
DEFAULT_IGNORE_INDEX = 255  # void of external models' labels (Cityscapes' convention)
# Batch 2 and H != W, so a model exported for one batch size or a square input fails at load.
PROBE_SHAPE = (2, 3, 96, 128)
_EXTERNAL_KEYS = ('class_names', 'colors', 'normalize', 'ignore_index', 'size_multiple')
_ICNET_KEYS = ('class_names', 'colors', 'ignore_index')
_HOW_TO_EXPORT = ('it must take float RGB (B, 3, H, W) for any batch size and frame size '
                  '(export with a dynamic batch, height and width) and return logits '
                  '(B, C, H, W)')


class SegModelError(CheckpointError):
    """A segmentation model file, or the YAML beside it, cannot be used; says which and why."""


def sidecar_yaml(path: Union[str, os.PathLike]) -> str:
    """The YAML that describes a model file: same folder and stem, `.yaml`."""
    return os.path.splitext(os.fspath(path))[0] + '.yaml'


def model_kind(path: Union[str, os.PathLike]) -> str:
    """'icnet', 'torchscript' or 'export', from the file's archive layout (and .pt2 suffix).

    Anything that is not a TorchScript or torch.export archive is taken for one of our
    checkpoints, whose reader then says precisely what is wrong with it.
    """
    path = os.fspath(path)
    if path.lower().endswith('.pt2'):
        return 'export'
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return 'icnet'  # old-style torch.save pickle, or not a torch file at all
    leaves = {name.split('/', 1)[-1] for name in names}
    if 'archive_format' in leaves:
        return 'export'
    if 'constants.pkl' in leaves and any('/code/' in name for name in names):
        return 'torchscript'
    return 'icnet'


class SegModel(nn.Module):
    """A segmentation network and what its outputs mean.

    `seg(x, pyramid=None)`: float RGB (B, 3, H, W) in [0, 1] -> logits (B, C, H, W). `pyramid`
    ({2 or 4: LR frame}) reaches our ICNet only and is ignored by other models. `module` is the
    network itself (the engine may replace it by a fused / compiled version of itself).
    """

    def __init__(self, module: nn.Module, kind: str, path: str, class_names: Sequence[str],
                 colors: np.ndarray, ignore_index: int,
                 normalize: Optional[Tuple[Sequence[float], Sequence[float]]] = None,
                 size_multiple: int = 1) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f'kind must be one of {KINDS}, got {kind!r}')
        self.module = module
        self.kind = kind
        self.path = path
        self.class_names: List[str] = list(class_names)
        self.colors = np.array(colors, dtype=np.uint8).reshape(-1, 3)  # (C, 3) RGB
        self.colors.setflags(write=False)
        self.ignore_index = int(ignore_index)
        self.size_multiple = int(size_multiple)
        mean, std = normalize if normalize is not None else (None, None)
        self.register_buffer('mean', _rgb_tensor(mean), persistent=False)
        self.register_buffer('std', _rgb_tensor(std), persistent=False)

    @property
    def num_classes(self) -> int:
        """Number of output channels (classes)."""
        return len(self.class_names)

    @property
    def supports_pyramid(self) -> bool:
        """True for our ICNet, whose low-resolution branches can take the received LR frame."""
        return self.kind == 'icnet'

    def forward(self, x: torch.Tensor,
                pyramid: Optional[Dict[int, torch.Tensor]] = None) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> logits (B, C, H, W)."""
        if self.supports_pyramid:
            return self.module(x, pyramid)
        return self._forward_external(x)

    def train(self, mode: bool = True) -> 'SegModel':
        """Set the mode; an exported program keeps the mode it was exported in (its only one)."""
        self.training = mode
        if self.kind != 'export':
            self.module.train(mode)
        return self

    def _forward_external(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise, pad to size_multiple, run, check, resize the logits to the input, crop."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise SegModelError(f'{self.path}: input must be (B, 3, H, W), got {tuple(x.shape)}')
        h, w = x.shape[-2:]
        if self.mean is not None:
            x = (x - self.mean) / self.std
        step = self.size_multiple
        hp, wp = -(-h // step) * step, -(-w // step) * step
        if (hp, wp) != (h, w):
            x = F.pad(x, (0, wp - w, 0, hp - h), mode='replicate')  # (B, 3, H, W) -> (Hp, Wp)
        try:
            out = self.module(x.contiguous())
        except Exception as exc:  # whatever a foreign network raises, name the file and input
            raise SegModelError(f'{self.path}: the model failed on an input of shape '
                                f'{tuple(x.shape)}: {type(exc).__name__}: {str(exc)[:400]}; '
                                f'{_HOW_TO_EXPORT}') from exc
        self._check_logits(out, x.shape[0])
        if tuple(out.shape[-2:]) != (hp, wp):  # e.g. logits at 1/8: upsample like ICNet does
            out = F.interpolate(out, size=(hp, wp), mode='bilinear', align_corners=False)
        return out[..., :h, :w]  # -> (B, C, H, W)

    def _check_logits(self, out: Any, batch: int) -> None:
        """Raise SegModelError unless `out` is float logits (batch, num_classes, h, w)."""
        if not isinstance(out, torch.Tensor):
            raise SegModelError(f'{self.path}: the model returns a {type(out).__name__}, not a '
                                f'logits tensor (B, C, H, W); make forward() return only the '
                                f'logits')
        if out.dim() != 4 or out.shape[0] != batch:
            raise SegModelError(f'{self.path}: the model returns shape {tuple(out.shape)} for a '
                                f'batch of {batch}, not logits (B, C, H, W)')
        if not out.is_floating_point():
            raise SegModelError(f'{self.path}: the model returns {out.dtype} values, not float '
                                f'logits (return the scores, not their argmax)')
        if out.shape[1] != self.num_classes:
            raise SegModelError(f'{self.path}: the model outputs {out.shape[1]} channels but '
                                f'{sidecar_yaml(self.path)} lists {self.num_classes} class_names')


def require_same_classes(seg: SegModel, reference: SegModel) -> None:
    """SegModelError unless `seg` labels exactly `reference`'s classes (a net that serves some
    frames of a stream, e.g. an adapted `seg_icnet_x{S}.pt`, must speak the stream's labels)."""
    if seg.class_names != reference.class_names:
        raise SegModelError(f'{seg.path} labels {seg.class_names}, but {reference.path} labels '
                            f'{reference.class_names}: one mask stream cannot mix them')


def _rgb_tensor(values: Optional[Sequence[float]]) -> Optional[torch.Tensor]:
    return None if values is None else torch.tensor(values, dtype=torch.float32).view(1, 3, 1, 1)


def load_seg_model(path: Union[str, os.PathLike],
                   device: Union[str, torch.device] = 'cpu') -> SegModel:
    """Load a segmentation model file onto `device`, in eval mode (see the module docstring).

    Raises SegModelError (a CheckpointError) naming the file and the problem: missing file or
    YAML, bad YAML keys or values, class count != output channels, output that is not logits.
    """
    path = os.fspath(path)
    device = torch.device(device)
    if not os.path.isfile(path):
        raise SegModelError(f'segmentation model not found: {path} (expected our ICNet '
                            f'checkpoint, a TorchScript module or a torch.export .pt2)')
    kind = model_kind(path)
    if kind == 'icnet':
        return _load_icnet(path, device)
    meta = read_model_yaml(path, external=True)
    module = _load_torchscript(path, device) if kind == 'torchscript' \
        else _load_exported(path, device)
    seg = SegModel(module, kind, path, **meta).to(device).eval()
    _probe(seg, device)
    return seg


def _load_icnet(path: str, device: torch.device) -> SegModel:
    """Our checkpoint (weights_only=True), with its optional YAML or the CamVid defaults."""
    model, ckpt = load_checkpoint(path, device)
    if ckpt['model_type'] != 'icnet':
        hint = ('; serve another architecture as TorchScript or .pt2 with its YAML'
                if ckpt['model_type'] == 'fcdensenet' else '')
        raise SegModelError(f"{path} holds a '{ckpt['model_type']}' network, expected 'icnet' "
                            f'(a segmentation model){hint}')
    num_classes = int(model.config.num_classes)
    if os.path.isfile(sidecar_yaml(path)):
        meta = read_model_yaml(path, external=False)
        if len(meta['class_names']) != num_classes:
            raise SegModelError(f'{sidecar_yaml(path)} lists {len(meta["class_names"])} '
                                f'class_names but {path} predicts {num_classes} classes')
    elif num_classes == len(CAMVID_NAMES) - 1:  # CamVid's 11 classes; row 11 is void
        meta = {'class_names': CAMVID_NAMES[:num_classes],
                'colors': CAMVID_PALETTE[:num_classes], 'ignore_index': IGNORE_INDEX}
    else:
        meta = {'class_names': [f'class {i}' for i in range(num_classes)],
                'colors': distinct_palette(num_classes), 'ignore_index': DEFAULT_IGNORE_INDEX}
    return SegModel(model, 'icnet', path, **meta).to(device).eval()


def _load_torchscript(path: str, device: torch.device) -> nn.Module:
    try:
        return torch.jit.load(path, map_location=device)
    except Exception as exc:  # torch raises RuntimeError or its own C++ error types
        raise SegModelError(f'cannot read TorchScript module {path}: {type(exc).__name__}: '
                            f'{str(exc)[:400]}') from exc


def _load_exported(path: str, device: torch.device) -> nn.Module:
    try:
        with open(path, 'rb') as stream:
            program = torch.export.load(stream)
    except Exception as exc:
        raise SegModelError(f'cannot read torch.export program {path}: {type(exc).__name__}: '
                            f'{str(exc)[:400]}') from exc
    try:
        from torch.export.passes import move_to_device_pass
    except ImportError:  # older torch: move the unlifted module's tensors instead
        return program.module().to(device)
    return move_to_device_pass(program, device).module()


def _probe(seg: SegModel, device: torch.device) -> None:
    """Run a small input once, so a module that does not return (B, C, H, W) logits fails now."""
    x = torch.rand(PROBE_SHAPE, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        seg(x)  # forward checks the output and raises SegModelError


def read_model_yaml(model_path: str, external: bool = True) -> Dict[str, Any]:
    """Parse and check the YAML beside `model_path` into SegModel's keyword arguments."""
    path = sidecar_yaml(model_path)
    if not os.path.isfile(path):
        raise SegModelError(f'{model_path} needs {path} beside it, with at least '
                            f'class_names: [...] (one name per output channel); see the README, '
                            f'"Bring your own segmentation model"')
    try:
        with open(path, encoding='utf-8') as stream:
            doc = yaml.safe_load(stream)
    except (OSError, yaml.YAMLError) as exc:
        raise SegModelError(f'cannot read {path}: {exc}') from exc
    if not isinstance(doc, Mapping):
        raise SegModelError(f'{path}: expected a mapping of keys, got {type(doc).__name__}')
    allowed = _EXTERNAL_KEYS if external else _ICNET_KEYS
    unknown = sorted(str(k) for k in doc if k not in allowed)
    if unknown:
        extra = '' if external else ' (ICNet normalises and pads its input itself)'
        raise SegModelError(f'{path}: unknown keys {unknown}; allowed: {list(allowed)}{extra}')
    try:
        return _parse_meta(doc)
    except ValueError as exc:
        raise SegModelError(f'{path}: {exc}') from None


def _parse_meta(doc: Mapping[str, Any]) -> Dict[str, Any]:
    """The checked values of a model YAML; ValueError names the key at fault."""
    names = doc.get('class_names')
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f'class_names must be a non-empty list of strings, got {names!r}')
    if len(names) > MAX_CLASSES:
        raise ValueError(f'{len(names)} class_names; at most {MAX_CLASSES} (masks are uint8)')
    meta: Dict[str, Any] = {'class_names': names,
                            'ignore_index': _int(doc, 'ignore_index', DEFAULT_IGNORE_INDEX,
                                                 0, 255)}
    colors = doc.get('colors')
    if colors is None:
        meta['colors'] = distinct_palette(len(names))
    elif not isinstance(colors, list) or len(colors) != len(names) or not all(
            isinstance(c, list) and len(c) == 3 and all(_is_int(v) and 0 <= v <= 255 for v in c)
            for c in colors):
        raise ValueError(f'colors must list {len(names)} [R, G, B] triples of integers 0..255 '
                         f'(one per class name), got {colors!r:.200}')
    else:
        meta['colors'] = np.array(colors, dtype=np.uint8)
    if 'normalize' in doc:
        meta['normalize'] = _normalize(doc['normalize'])
    if 'size_multiple' in doc:
        meta['size_multiple'] = _int(doc, 'size_multiple', 1, 1, 1024)
    return meta


def _normalize(value: Any) -> Optional[Tuple[List[float], List[float]]]:
    """None / 'none', or {mean: [3 floats], std: [3 floats > 0]} on [0, 1] RGB."""
    if value is None or value == 'none':
        return None
    if not isinstance(value, Mapping) or set(value) != {'mean', 'std'}:
        raise ValueError(f"normalize must be none or {{mean: [r, g, b], std: [r, g, b]}} on "
                         f"[0, 1] RGB, got {value!r}")
    out = []
    for key in ('mean', 'std'):
        triple = value[key]
        if not isinstance(triple, list) or len(triple) != 3 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in triple):
            raise ValueError(f'normalize.{key} must be 3 numbers (R, G, B), got {triple!r}')
        out.append([float(v) for v in triple])
    if min(out[1]) <= 0:
        raise ValueError(f'normalize.std must be > 0, got {out[1]}')
    return out[0], out[1]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(doc: Mapping[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = doc.get(key, default)
    if not _is_int(value) or not low <= value <= high:
        raise ValueError(f'{key} must be an integer {low}..{high}, got {value!r}')
    return value
