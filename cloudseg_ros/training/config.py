"""Dataclass train configs filled from an optional YAML file and checked `--set` overrides.

Every entry point owns one `@dataclass` config. `load_config()` starts from its defaults, applies
the YAML mapping (if any) and then the `--set key=value` overrides, converting each value to the
field's declared type, so a typo or a wrong type fails before any data is loaded.
"""
import argparse
import dataclasses
import os
import random
import sys
import typing
from typing import Any, Dict, Iterable, Optional, Type, TypeVar

import numpy as np

T = TypeVar('T')

_TRUE = {'1', 'true', 'yes', 'on'}
_FALSE = {'0', 'false', 'no', 'off'}


class ConfigError(ValueError):
    """An unknown key or a value of the wrong type in a train config."""


def _convert(name: str, value: Any, hint: Any) -> Any:
    """Convert `value` (a YAML scalar or a `--set` string) to the type `hint` of field `name`."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union:  # Optional[X]: 'none'/'null' -> None, else X
        if value is None or (isinstance(value, str) and value.lower() in ('none', 'null')):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _convert(name, value, inner[0])
    if origin in (tuple, list):
        items = value.split(',') if isinstance(value, str) else list(value)
        items = [i for i in items if not (isinstance(i, str) and not i.strip())]
        item_type = args[0] if args else str
        converted = [_convert(name, i.strip() if isinstance(i, str) else i, item_type)
                     for i in items]
        return tuple(converted) if origin is tuple else converted
    if hint is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in _TRUE | _FALSE:
            return str(value).lower() in _TRUE
        raise ConfigError(f"config key '{name}': expected a bool, got {value!r}")
    if hint in (int, float):
        return _to_number(name, value, hint)
    if hint is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"config key '{name}': expected a string, got {value!r}")
        return str(value)
    return value


def _to_number(name: str, value: Any, hint: type) -> Any:
    """int/float conversion that refuses bools and non-integral ints ('2.5' for an int key)."""
    try:
        if isinstance(value, bool):
            raise ValueError(value)
        number = float(value)
        if hint is float:
            return number
        if not number.is_integer():
            raise ValueError(value)
        return int(number)
    except (TypeError, ValueError):
        raise ConfigError(
            f"config key '{name}': expected {hint.__name__}, got {value!r}") from None


def apply_values(cfg: T, values: Dict[str, Any]) -> T:
    """Return a copy of dataclass `cfg` with `values` converted to the fields' types."""
    hints = typing.get_type_hints(type(cfg))
    names = [f.name for f in dataclasses.fields(cfg)]
    changes = {}
    for key, value in values.items():
        if key not in hints or key not in names:
            raise ConfigError(
                f"unknown config key '{key}' for {type(cfg).__name__}; "
                f"valid keys: {', '.join(sorted(names))}")
        changes[key] = _convert(key, value, hints[key])
    return dataclasses.replace(cfg, **changes)


def parse_overrides(items: Iterable[str]) -> Dict[str, str]:
    """Split `key=value` strings; a missing '=' is an error."""
    out: Dict[str, str] = {}
    for item in items:
        if '=' not in item:
            raise ConfigError(f"--set expects key=value, got '{item}'")
        key, value = item.split('=', 1)
        out[key.strip()] = value
    return out


def load_config(cls: Type[T], yaml_path: Optional[str] = None,
                overrides: Iterable[str] = ()) -> T:
    """Defaults of `cls` <- YAML mapping at `yaml_path` <- `--set key=value` overrides."""
    cfg = cls()
    if yaml_path:
        import yaml  # only needed when a file is given
        with open(yaml_path, 'r', encoding='utf-8') as f:
            data = yaml.safe_load(f) or {}
        if not isinstance(data, dict):
            raise ConfigError(f'{yaml_path}: expected a mapping of config keys')
        cfg = apply_values(cfg, data)
    return apply_values(cfg, parse_overrides(overrides))


def add_common_args(parser: argparse.ArgumentParser, default_out: str) -> None:
    """Arguments every training entry point shares."""
    parser.add_argument('--config', default=None, help='YAML file with config keys')
    parser.add_argument('--set', dest='overrides', action='append', default=[],
                        metavar='KEY=VALUE', help='override one config key (repeatable)')
    parser.add_argument('--out', default=default_out, help='output directory for checkpoints')
    parser.add_argument('--resume', action='store_true',
                        help='continue from the last checkpoint in --out (model, optimizer, step)')
    parser.add_argument('--device', default='auto', help="'auto', 'cpu', 'cuda', 'cuda:1', ...")


def resolve_device(name: str = 'auto') -> 'torch.device':  # noqa: F821
    """'auto' -> cuda when available, else cpu."""
    import torch
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) so CPU smoke runs are repeatable."""
    import torch
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)
    os.environ.setdefault('PYTHONHASHSEED', str(seed))


def config_dict(cfg: Any) -> Dict[str, Any]:
    """Plain dict of a dataclass config (tuples become lists so it stores in checkpoints)."""
    out = {}
    for key, value in dataclasses.asdict(cfg).items():
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


def run_training_command(prog: str, doc: str, config_type: Type[T], default_out: str,
                         run: Any, argv: Optional[Iterable[str]] = None) -> int:
    """Parse the shared training options, load the config and call `run(cfg, out, device, resume)`.

    A bad config file or override is reported on stderr with exit code 2.
    """
    parser = argparse.ArgumentParser(prog=f'cloudseg {prog}', description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser, default_out)
    args = parser.parse_args(None if argv is None else list(argv))
    # Imported here, like torch in this module: `config` itself stays importable without torch.
    from cloudseg_ros.nets.checkpoint import CheckpointError
    try:
        cfg = load_config(config_type, args.config, args.overrides)
        return run(cfg, args.out, resolve_device(args.device), args.resume)
    except (ConfigError, OSError, CheckpointError) as exc:
        print(f'{prog}: {exc}', file=sys.stderr)
        return 2
