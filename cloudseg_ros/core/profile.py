"""Offline configuration profiles: what each uplink configuration costs and what it is worth.

A *stream configuration* is everything the robot can be told to change (downsampling scale,
codec and quality, frame-rate cap, frame-selector thresholds). Profiling runs each one over a
representative clip and records its bitrate (kbps) and accuracy (agreement-mIoU: the cloud
pipeline's masks vs the full-resolution masks of the same frames; optionally also mIoU against
labels). The controller only ever needs the *Pareto front* of these points: for any bitrate,
the most accurate configuration that does not cost more.

Profiles are YAML files::

    format_version: 1
    meta: {clip: ..., date: ...}          # free-form, plain YAML values
    entries:                              # every profiled configuration
      - {name: x4-jpeg-q70-15hz-u0.03-k0.2, scale: 4, codec: jpeg, quality: 70,
         max_rate_hz: 15.0, useful_threshold: 0.03, key_threshold: 0.2,
         kbps: 812.5, accuracy: 0.83, labeled_miou: null}
    front: [x4-jpeg-q70-15hz-u0.03-k0.2, ...]   # names of the front entries, by kbps

Loading validates every field and raises ValueError naming the file, the entry and the field.
"""
import math
import os
import tempfile
from dataclasses import dataclass, field
from itertools import product
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import yaml

from cloudseg_ros.core.codecs import (CODECS, check_crf, check_jpeg_quality, check_x264_preset,
                                      EDGE_X264_PRESETS)
from cloudseg_ros.core.selector import SelectorConfig

FORMAT_VERSION = 1
SCALES = (1, 2, 3, 4)
DEFAULT_KEY_THRESHOLD = SelectorConfig.key_threshold
_CONFIG_KEYS = ('scale', 'codec', 'quality', 'max_rate_hz', 'useful_threshold', 'key_threshold')
_ENTRY_KEYS = _CONFIG_KEYS + ('kbps', 'accuracy')
# The edge node's parameters a StreamConfig sets (both quality parameters: the codec picks one).
EDGE_PARAMETERS = ('scale', 'codec', 'jpeg_quality', 'h264_crf', 'max_rate_hz',
                   'useful_threshold', 'key_threshold')
# The x264 preset the profile's H.264 bitrates were measured with (meta 'h264_preset'); the
# controller sets it on the robot too, so its bitrates are the ones the robot sends. Profiles
# written before the preset was recorded were measured with ultrafast.
PRESET_PARAMETER = 'h264_preset'
LEGACY_PROFILE_PRESET = 'ultrafast'


@dataclass(frozen=True)
class StreamConfig:
    """One uplink configuration the robot can be switched to (hashable, so usable as a key)."""

    scale: int  # downsampling factor 1..4
    codec: str  # 'jpeg' or 'h264'
    quality: int  # JPEG quality 1..100, or H.264 CRF 0..51 (lower CRF = more bits)
    max_rate_hz: float  # frame-rate cap of the selector
    useful_threshold: float  # selector score vs last sent frame that makes a frame worth sending
    key_threshold: float = DEFAULT_KEY_THRESHOLD  # selector score vs last key frame -> KEY

    def validate(self) -> None:
        """Raise ValueError if any field is out of range."""
        if isinstance(self.scale, bool) or self.scale not in SCALES:
            raise ValueError(f'scale must be one of {SCALES}, got {self.scale!r}')
        if self.codec not in CODECS:
            raise ValueError(f'codec must be one of {CODECS}, got {self.codec!r}')
        if self.codec == 'jpeg':
            check_jpeg_quality(self.quality)
        else:
            check_crf(self.quality)
        # The selector owns the rules for its thresholds and rate; reuse them verbatim.
        SelectorConfig(useful_threshold=self.useful_threshold, key_threshold=self.key_threshold,
                       max_rate_hz=self.max_rate_hz).validate()

    @property
    def name(self) -> str:
        """Short unique name, e.g. 'x4-jpeg-q70-15hz-u0.03-k0.2' ('crf28' for H.264)."""
        quality = f'q{self.quality}' if self.codec == 'jpeg' else f'crf{self.quality}'
        return (f'x{self.scale}-{self.codec}-{quality}-{self.max_rate_hz:g}hz'
                f'-u{self.useful_threshold:g}-k{self.key_threshold:g}')

    def edge_parameters(self) -> Dict[str, Any]:
        """Return the edge node's parameters for this configuration (config/robot.yaml names)."""
        quality_param = 'jpeg_quality' if self.codec == 'jpeg' else 'h264_crf'
        return {'scale': self.scale, 'codec': self.codec, quality_param: self.quality,
                'max_rate_hz': float(self.max_rate_hz),
                'useful_threshold': float(self.useful_threshold),
                'key_threshold': float(self.key_threshold)}

    @staticmethod
    def from_edge_parameters(values: Mapping[str, Any]) -> Optional['StreamConfig']:
        """The configuration an edge runs, from its EDGE_PARAMETERS values.

        None if one is missing (not read yet, or not an edge node).
        """
        if any(values.get(name) is None for name in EDGE_PARAMETERS):
            return None
        quality = values['jpeg_quality'] if values['codec'] == 'jpeg' else values['h264_crf']
        return StreamConfig(int(values['scale']), str(values['codec']), int(quality),
                            float(values['max_rate_hz']), float(values['useful_threshold']),
                            float(values['key_threshold']))


@dataclass
class ProfileEntry:
    """A profiled configuration: its measured bitrate and accuracy."""

    config: StreamConfig
    kbps: float  # mean uplink bitrate over the profiling clip
    accuracy: float  # agreement-mIoU vs full-resolution masks, in [0, 1]
    labeled_miou: Optional[float] = None  # mIoU vs ground-truth labels, if the clip has them

    @property
    def name(self) -> str:
        """The configuration's name."""
        return self.config.name

    def validate(self) -> None:
        """Raise ValueError if the configuration or a measurement is out of range."""
        self.config.validate()
        if not (math.isfinite(self.kbps) and self.kbps > 0.0):
            raise ValueError(f'kbps must be a finite number > 0, got {self.kbps!r}')
        if not 0.0 <= self.accuracy <= 1.0:
            raise ValueError(f'accuracy must be in [0, 1], got {self.accuracy!r}')
        if self.labeled_miou is not None and not 0.0 <= self.labeled_miou <= 1.0:
            raise ValueError(f'labeled_miou must be in [0, 1] or null, got {self.labeled_miou!r}')


@dataclass
class Profile:
    """A loaded profile: all entries, the Pareto front (sorted by kbps) and free-form meta."""

    entries: List[ProfileEntry]
    front: List[ProfileEntry]
    meta: Dict[str, Any] = field(default_factory=dict)

    @property
    def h264_preset(self) -> str:
        """The robot x264 preset the H.264 entries were measured with."""
        return str(self.meta.get(PRESET_PARAMETER, LEGACY_PROFILE_PRESET))


def pareto_front(entries: Iterable[ProfileEntry]) -> List[ProfileEntry]:
    """Entries not dominated in (higher accuracy, lower kbps), sorted by increasing kbps.

    An entry is dominated if another costs no more and is at least as accurate, one of the two
    strictly. The front's accuracy therefore strictly increases with kbps. Of entries with
    identical kbps and accuracy only the first in input order is kept.
    """
    # Cheapest first; at equal cost the most accurate first, so the sweep keeps it and drops
    # the rest. sorted() is stable, which makes the tie rule above hold.
    ordered = sorted(entries, key=lambda e: (e.kbps, -e.accuracy))
    front: List[ProfileEntry] = []
    for entry in ordered:
        if not front or entry.accuracy > front[-1].accuracy:
            front.append(entry)
    return front


Thresholds = Union[float, Tuple[float, float]]


def config_grid(scales: Sequence[int], codecs: Sequence[str],
                qualities: Union[Sequence[int], Mapping[str, Sequence[int]]],
                rates: Sequence[float], thresholds: Sequence[Thresholds],
                key_threshold: float = DEFAULT_KEY_THRESHOLD) -> List[StreamConfig]:
    """Every combination of the given values, validated, without duplicates, in nesting order.

    `qualities` is either one list for all codecs or a mapping codec -> list (JPEG quality and
    H.264 CRF have different ranges). Each of `thresholds` is a useful threshold (paired with
    `key_threshold`) or a (useful, key) pair. Raises ValueError on an invalid combination.
    """
    configs: List[StreamConfig] = []
    seen = set()
    for scale, codec in product(scales, codecs):
        if isinstance(qualities, Mapping):
            if codec not in qualities:
                raise ValueError(f'qualities has no list for codec {codec!r}')
            codec_qualities = qualities[codec]
        else:
            codec_qualities = qualities
        for quality, rate, threshold in product(codec_qualities, rates, thresholds):
            useful, key = (threshold if isinstance(threshold, (tuple, list))
                           else (threshold, key_threshold))
            config = StreamConfig(scale, codec, quality, rate, useful, key)
            config.validate()
            if config not in seen:
                seen.add(config)
                configs.append(config)
    return configs


def save_profile(path: str, entries: Sequence[ProfileEntry],
                 front: Optional[Sequence[ProfileEntry]] = None,
                 meta: Optional[Mapping[str, Any]] = None) -> None:
    """Write a profile as YAML (module docstring); `front` defaults to ``pareto_front(entries)``.

    Raises ValueError if an entry is invalid, two entries share a name, or a front entry is not
    among the entries. The file is replaced atomically, so a reader never sees half a profile.
    """
    names = set()
    for index, entry in enumerate(entries):
        try:
            entry.validate()
        except ValueError as err:
            raise ValueError(f'entries[{index}] ({entry.name}): {err}') from None
        if entry.name in names:
            raise ValueError(f'entries[{index}]: duplicate configuration {entry.name}')
        names.add(entry.name)
    front = pareto_front(entries) if front is None else sorted(front, key=lambda e: e.kbps)
    for entry in front:
        if entry.name not in names:
            raise ValueError(f'front entry {entry.name} is not among the entries')
    document = {'format_version': FORMAT_VERSION, 'meta': _plain(dict(meta or {})),
                'entries': [_entry_to_dict(entry) for entry in entries],
                'front': [entry.name for entry in front]}
    try:
        text = yaml.safe_dump(document, sort_keys=False, default_flow_style=None, width=99)
    except yaml.YAMLError as err:
        raise ValueError(f'meta holds a value YAML cannot store: {err}') from None
    directory = os.path.dirname(os.path.abspath(path))
    with tempfile.NamedTemporaryFile('w', dir=directory, suffix='.tmp', delete=False) as tmp:
        tmp.write(text)
    os.replace(tmp.name, path)


def _plain(value: Any) -> Any:
    """Turn numpy scalars and tuples (common in tool metadata) into plain YAML values."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _entry_to_dict(entry: ProfileEntry) -> Dict[str, Any]:
    """Plain-YAML mapping of one entry (float()/int() strip numpy scalar types)."""
    config = entry.config
    labeled = None if entry.labeled_miou is None else float(entry.labeled_miou)
    return {'name': entry.name, 'scale': int(config.scale), 'codec': str(config.codec),
            'quality': int(config.quality), 'max_rate_hz': float(config.max_rate_hz),
            'useful_threshold': float(config.useful_threshold),
            'key_threshold': float(config.key_threshold), 'kbps': float(entry.kbps),
            'accuracy': float(entry.accuracy), 'labeled_miou': labeled}


def load_profile(path: str) -> Profile:
    """Read and validate a profile written by :func:`save_profile`.

    Raises ValueError naming the file and, where it applies, the entry and the field, for
    unreadable YAML, missing keys, wrong types, out-of-range values and unknown front names.
    """
    with open(path, encoding='utf-8') as stream:
        try:
            document = yaml.safe_load(stream)
        except yaml.YAMLError as err:
            raise ValueError(f'{path}: not valid YAML: {err}') from None
    try:
        return _profile_from_document(document)
    except ValueError as err:
        raise ValueError(f'{path}: {err}') from None


def _profile_from_document(document: Any) -> Profile:
    """Build a Profile from a parsed YAML document (errors carry no file name yet)."""
    if not isinstance(document, dict):
        raise ValueError(f'expected a mapping at top level, got {type(document).__name__}')
    version = document.get('format_version')
    if version != FORMAT_VERSION:
        raise ValueError(f'format_version must be {FORMAT_VERSION}, got {version!r}')
    raw_entries = document.get('entries')
    if not isinstance(raw_entries, list) or not raw_entries:
        raise ValueError('"entries" must be a non-empty list')
    entries = [_entry_from_dict(raw, index) for index, raw in enumerate(raw_entries)]
    by_name: Dict[str, ProfileEntry] = {}
    for index, entry in enumerate(entries):
        if entry.name in by_name:
            raise ValueError(f'entries[{index}]: duplicate configuration {entry.name}')
        by_name[entry.name] = entry
    raw_front = document.get('front')
    if raw_front is None:
        front = pareto_front(entries)
    elif isinstance(raw_front, list) and all(isinstance(n, str) for n in raw_front):
        unknown = [name for name in raw_front if name not in by_name]
        if unknown:
            raise ValueError(f'front names entries that do not exist: {unknown}')
        front = sorted((by_name[name] for name in raw_front), key=lambda e: e.kbps)
    else:
        raise ValueError('"front" must be a list of entry names')
    meta = document.get('meta') or {}
    if not isinstance(meta, dict):
        raise ValueError(f'"meta" must be a mapping, got {type(meta).__name__}')
    profile = Profile(entries, front, meta)
    check_x264_preset(profile.h264_preset, EDGE_X264_PRESETS)  # ValueError names the preset
    return profile


def _entry_from_dict(raw: Any, index: int) -> ProfileEntry:
    """Parse and validate entries[index]; errors name the entry and the field."""
    label = f'entries[{index}]'
    if not isinstance(raw, dict):
        raise ValueError(f'{label}: expected a mapping, got {type(raw).__name__}')
    if isinstance(raw.get('name'), str):
        label = f'{label} ({raw["name"]})'
    missing = [key for key in _ENTRY_KEYS if key not in raw]
    if missing:
        raise ValueError(f'{label}: missing key(s) {", ".join(missing)}')
    try:
        config = StreamConfig(
            scale=_integer(raw, 'scale'), codec=_string(raw, 'codec'),
            quality=_integer(raw, 'quality'), max_rate_hz=_number(raw, 'max_rate_hz'),
            useful_threshold=_number(raw, 'useful_threshold'),
            key_threshold=_number(raw, 'key_threshold'))
        labeled = None if raw.get('labeled_miou') is None else _number(raw, 'labeled_miou')
        entry = ProfileEntry(config, _number(raw, 'kbps'), _number(raw, 'accuracy'), labeled)
        entry.validate()
    except ValueError as err:
        raise ValueError(f'{label}: {err}') from None
    if 'name' in raw and raw['name'] != entry.name:
        # The name is derived from the fields; a mismatch means the file was edited by hand.
        raise ValueError(f'{label}: name does not match its fields (expected {entry.name})')
    return entry


def _number(raw: Dict[str, Any], key: str) -> float:
    """raw[key] as a float; bools and strings are refused rather than coerced."""
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f'{key} must be a number, got {value!r}')
    return float(value)


def _integer(raw: Dict[str, Any], key: str) -> int:
    """raw[key] as an int; 70.0, '70' and True are refused."""
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f'{key} must be an integer, got {value!r}')
    return value


def _string(raw: Dict[str, Any], key: str) -> str:
    """raw[key], which must be a string."""
    value = raw[key]
    if not isinstance(value, str):
        raise ValueError(f'{key} must be a string, got {value!r}')
    return value
