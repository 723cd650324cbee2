"""Self-describing checkpoints: save, load and rebuild any network of `nets/`.

Format (docs/CONVENTIONS.md), loadable with `torch.load(path, weights_only=True)`:
`{'format_version': 1, 'model_type': 'carn'|'icnet'|'fcdensenet', 'model_config': dict,
'model': state_dict, 'step': int, 'metrics': dict, 'train_config': dict,
'weights_dtype': 'float32'|'float16'}`.
"""
import dataclasses
import os
from pathlib import Path
import tempfile
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from cloudseg_ros.nets.carn import CARN, CARNConfig
from cloudseg_ros.nets.fcdensenet import FCDenseNet, FCDenseNetConfig
from cloudseg_ros.nets.icnet import ICNet, ICNetConfig

FORMAT_VERSION = 1
MODEL_TYPES = {'carn': (CARN, CARNConfig), 'icnet': (ICNet, ICNetConfig),
               'fcdensenet': (FCDenseNet, FCDenseNetConfig)}
# Wrapper prefixes that must not reach a checkpoint: torch.compile and (Distributed)DataParallel.
_WRAPPER_PREFIXES = ('_orig_mod.', 'module.')
_REQUIRED_KEYS = ('format_version', 'model_type', 'model_config', 'model')
_HOW_TO_GET = ('shipped weights live in models/ (see models/MODEL_CARD.md); train your own with '
               '`cloudseg train-seg` (segmentation) or `cloudseg train-sr` (super-resolution)')

ConfigLike = Union[Mapping[str, Any], Any]


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or does not describe a known network."""


def config_from_dict(model_type: str, model_config: Optional[ConfigLike]):
    """Build the config dataclass of `model_type` from a dict (or pass a dataclass through).

    Raises ValueError for an unknown model type or unknown config keys; missing keys take the
    dataclass defaults. Lists become tuples where the default is a tuple (YAML has no tuples).
    """
    if model_type not in MODEL_TYPES:
        raise ValueError(f'unknown model_type {model_type!r}; known: {sorted(MODEL_TYPES)}')
    config_cls = MODEL_TYPES[model_type][1]
    if isinstance(model_config, config_cls):
        return model_config
    values = dict(model_config or {})
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f'unknown {model_type} config keys {unknown[:5]}; '
                         f'known: {sorted(fields)}')
    for name, value in values.items():
        if isinstance(fields[name].default, tuple) and isinstance(value, list):
            values[name] = tuple(value)
    return config_cls(**values)


def build_model(model_type: str, model_config: Optional[ConfigLike] = None) -> nn.Module:
    """Network of `model_type` (carn, icnet, fcdensenet) from a config dict or dataclass.

    None: the defaults.
    """
    config = config_from_dict(model_type, model_config)
    return MODEL_TYPES[model_type][0](config)


def clean_state_dict(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Strip torch.compile / DataParallel prefixes and move tensors to the CPU."""
    clean = {}
    for key, tensor in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in _WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        # torch.compile on a submodule leaves '_orig_mod.' in the middle of the key.
        clean[key.replace('._orig_mod.', '.')] = tensor.detach().cpu()
    return clean


def _plain(value: Any) -> Any:
    """Reduce metrics/configs to types `torch.load(weights_only=True)` accepts."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, 'item') and getattr(value, 'ndim', None) == 0:
        return value.item()  # numpy / torch scalars
    return str(value)  # Path, enum, ... kept readable rather than unloadable


def save_checkpoint(path: Union[str, Path], model: nn.Module, model_type: str,
                    model_config: Optional[ConfigLike] = None, step: int = 0,
                    metrics: Optional[Mapping[str, Any]] = None,
                    train_config: Optional[Any] = None, half_weights: bool = False) -> Path:
    """Write a checkpoint atomically (temp file + rename), so readers never see half a file.

    `model_config` defaults to `model.config`; `half_weights` stores floating tensors as float16
    (half the file size; loading casts back to float32).
    """
    config = config_from_dict(model_type, model_config or getattr(model, 'config', None))
    state = clean_state_dict(model.state_dict())
    if half_weights:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    ckpt = {'format_version': FORMAT_VERSION, 'model_type': model_type,
            'model_config': _plain(config), 'model': state, 'step': int(step),
            'metrics': _plain(dict(metrics or {})), 'train_config': _plain(train_config or {}),
            'weights_dtype': 'float16' if half_weights else 'float32'}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def read_checkpoint(path: Union[str, Path], map_location: Any = 'cpu') -> Dict[str, Any]:
    """Read and validate a checkpoint dict without building the network."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'checkpoint not found: {path}; {_HOW_TO_GET}')
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for truncated / foreign files
        raise CheckpointError(f'cannot read checkpoint {path}: {type(exc).__name__}: {exc}; '
                              f'the file is corrupted or not a torch checkpoint') from exc
    if not isinstance(ckpt, dict):
        raise CheckpointError(f'{path} holds a {type(ckpt).__name__}, not a checkpoint dict')
    missing = [k for k in _REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f'{path} is not a cloudseg checkpoint: missing keys {missing} '
                              f'(has {sorted(ckpt)[:5]})')
    if ckpt['format_version'] != FORMAT_VERSION:
        raise CheckpointError(f'{path}: unsupported format_version {ckpt["format_version"]!r} '
                              f'(this code reads version {FORMAT_VERSION})')
    if ckpt['model_type'] not in MODEL_TYPES:
        raise CheckpointError(f'{path}: unknown model_type {ckpt["model_type"]!r}; '
                              f'known: {sorted(MODEL_TYPES)}')
    return ckpt


def load_checkpoint(path: Union[str, Path],
                    map_location: Any = 'cpu') -> Tuple[nn.Module, Dict[str, Any]]:
    """Rebuild the network a checkpoint describes: (model in eval mode on map_location, dict).

    Raises CheckpointError with the path and the reason for every way a file can be unusable.
    """
    ckpt = read_checkpoint(path, map_location)
    try:
        model = build_model(ckpt['model_type'], ckpt['model_config'])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f'{path}: bad model_config for {ckpt["model_type"]}: {exc}') from exc
    state = {k: v.float() if v.is_floating_point() else v for k, v in ckpt['model'].items()}
    _load_state(model, state, path)
    if isinstance(map_location, (str, torch.device)):
        model.to(map_location)
    return model.eval(), ckpt


def _load_state(model: nn.Module, state: Dict[str, torch.Tensor], path: Union[str, Path]) -> None:
    """load_state_dict with a message naming the first mismatched keys."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong_shape:
        raise CheckpointError(
            f'{path}: weights do not match model_config ({len(missing)} missing, e.g. '
            f'{missing[:3]}; {len(unexpected)} unexpected, e.g. {unexpected[:3]}; '
            f'{len(wrong_shape)} with another shape, e.g. {wrong_shape[:3]})')
    model.load_state_dict(state)
