"""Seeded, structure-aware mutations of what peers send, as decoder projects fuzz their parsers.

A fuzz case is derived from `(seed, index)` alone (`numpy.random.default_rng([seed, index])`),
so any case of a long run can be regenerated and replayed by itself. Mutations start from valid
inputs and break one structure at a time, which reaches deeper code than random bytes would:

- JPEG payloads: marker bytes, segment lengths, SOF sizes / components / sampling factors, table
  contents, dropped or duplicated segments, the entropy-coded scan, truncation, byte flips,
  huge declared dimensions;
- H.264 Annex-B payloads: NAL unit types and header bits, start codes, dropped / duplicated /
  reordered NAL units and frames, SPS fields rewritten bit-exactly (picture size, cropping,
  profile, chroma format, bit depth, reference frames), truncation, byte flips, P frames with no
  IDR before them, frames of one size spliced into a stream of another;
- every EncodedFrame field (seq extremes up to 2^64-1, stamps far in the past or future, kind,
  sizes 0 / huge / mismatching, scale, codec strings with newlines or 10 kB long, session ids,
  frame ids) and every PipelineStats field (integer extremes, NaN and infinities in floats).

Values always fit their message types (a uint8 stays in 0..255): those are what DDS can carry.
Everything here is numpy and the project's codecs; the targets that run cases are in
cloudseg_ros/tools/fuzz.py.
"""
import base64
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from cloudseg_ros.core.codecs import FrameEncoder
from cloudseg_ros.core.receiver import ReceiveLimits

U8, U32, U64 = (1 << 8) - 1, (1 << 32) - 1, (1 << 64) - 1
I32_MIN, I32_MAX = -(1 << 31), (1 << 31) - 1
F32_MAX = float(np.finfo(np.float32).max)
SESSION_ID = 0x5EED  # the good stream's session id
KINDS = (1, 2, 3, 4)  # EncodedFrame.KIND_*

# Field name -> type, for every field of the messages (test/fuzz checks these stay complete).
FRAME_FIELDS = {
    'header': 'header', 'session_id': 'uint64', 'seq': 'uint64', 'kind': 'uint8',
    'orig_width': 'uint32', 'orig_height': 'uint32', 'width': 'uint32', 'height': 'uint32',
    'scale': 'uint8', 'codec': 'string', 'keyframe': 'boolean', 'data': 'sequence<uint8>'}
STATS_FIELDS = {
    'header': 'header', 'stage': 'string', 'arrival_stamp': 'time', 'seq': 'uint64',
    'kind': 'uint8', 'frames_in': 'uint64', 'frames_key': 'uint64', 'frames_useful': 'uint64',
    'frames_forced': 'uint64', 'frames_skipped': 'uint64', 'frames_rejected': 'uint64',
    'frames_lost': 'uint64', 'bytes_total': 'uint64', 'frame_bytes': 'uint32',
    'width': 'uint32', 'height': 'uint32', 'encode_ms': 'float', 'decode_ms': 'float',
    'sr_ms': 'float', 'seg_ms': 'float', 'total_ms': 'float', 'latency_ms': 'float',
    'arrival_gap_ms': 'float', 'queue_ms': 'float', 'inference_ms': 'float',
    'batch_size': 'uint32', 'probe_agreement_miou': 'float'}
_INT_MAX = {'uint8': U8, 'uint32': U32, 'uint64': U64}

LONG_STRING = 'x' * 10_000
STRINGS = ('', 'JPEG', 'h265', 'jpeg ', ' h264', 'jpeg\n[ERROR] [cloud]: forged line',
           'h264\r\n', '\x1b[2J\x1b[31mred', 'jp\x00eg', 'jpég', '\\n', '%s%s%n', LONG_STRING,
           'cloud_rx\n', 'edge' * 2500)


# ------------------------------------------------------------------------------- the cases
@dataclass
class FrameFields:
    """One EncodedFrame as plain values (header: stamp and frame_id)."""

    session_id: int
    seq: int
    kind: int
    orig_width: int
    orig_height: int
    width: int
    height: int
    scale: int
    codec: str
    keyframe: bool
    data: bytes
    stamp_sec: int = 0
    stamp_nanosec: int = 0
    frame_id: str = 'cam'

    def to_json(self) -> dict:
        """A JSON-able dict (payload in base64) that `from_json` reads back."""
        out = asdict(self)
        out['data'] = base64.b64encode(self.data).decode('ascii')
        return out

    @staticmethod
    def from_json(raw: dict) -> 'FrameFields':
        """Inverse of `to_json`."""
        return FrameFields(**dict(raw, data=base64.b64decode(raw['data'])))


@dataclass
class FrameCase:
    """Frames sent in a row (one or a few mutated ones), then the harness sends a good frame."""

    index: int
    frames: List[FrameFields]
    mutations: List[str] = field(default_factory=list)


@dataclass
class StatsCase:
    """One message to the controller: 'cloud_stats', 'edge_stats' or 'mask' (stamp only).

    `fields` holds PipelineStats values by name; 'stamp' and 'arrival_stamp' are (sec, nanosec).
    """

    index: int
    topic: str
    fields: Dict[str, object]
    mutations: List[str] = field(default_factory=list)


# ------------------------------------------------------------------------------- seeds
@dataclass
class Seeds:
    """Valid payloads the mutations start from (same every run: no randomness)."""

    jpegs: List[Tuple[bytes, int, int]]  # (data, width, height)
    h264: List[Tuple[bytes, bool]]       # one stream: IDR then P frames, (data, keyframe)
    h264_size: Tuple[int, int]
    h264_other: Tuple[bytes, int, int]   # an IDR of another size (with its SPS/PPS)


def seed_image(width: int, height: int, t: int = 0) -> np.ndarray:
    """A deterministic textured RGB uint8 image; `t` moves it."""
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.stack([(xx * 7 + 5 * t) % 256, (yy * 5 + 3 * t) % 256, (xx * yy + t) % 256], 2)
    return img.astype(np.uint8)


def make_seeds() -> Seeds:
    """JPEGs of a few small sizes (odd ones too) and a short H.264 stream of 64x48."""
    jpeg = FrameEncoder('jpeg', jpeg_quality=75)
    jpegs = [(jpeg.encode(seed_image(w, h)).data, w, h) for w, h in
             ((64, 48), (33, 17), (16, 16), (8, 8), (120, 90))]
    h264 = FrameEncoder('h264', h264_crf=30)
    stream = []
    for t in range(6):
        enc = h264.encode(seed_image(64, 48, t), force_keyframe=t == 0)
        stream.append((enc.data, enc.keyframe))
    other = FrameEncoder('h264').encode(seed_image(48, 32))
    return Seeds(jpegs, stream, (64, 48), (other.data, 48, 32))


# ------------------------------------------------------------------------------- JPEG
_STANDALONE = {0x01, 0xD8, 0xD9} | set(range(0xD0, 0xD8))


def jpeg_segments(data: bytes) -> List[Tuple[int, int, int]]:
    """(marker, start, end) of each header segment up to and including SOS."""
    segments, pos = [], 2
    for _ in range(256):  # a real header has a dozen segments; fill bytes could run on
        if pos + 4 > len(data) or data[pos] != 0xFF:
            break
        marker = data[pos + 1]
        if marker in _STANDALONE or marker == 0xFF:
            pos += 1 if marker == 0xFF else 2  # fill byte or marker without a length
            continue
        end = pos + 2 + int.from_bytes(data[pos + 2:pos + 4], 'big')
        segments.append((marker, pos, end))
        if marker == 0xDA:
            break
        pos = end
    return segments


def _segment(rng, data: bytes, markers: Sequence[int] = ()) -> Optional[Tuple[int, int, int]]:
    segs = [s for s in jpeg_segments(data) if not markers or s[0] in markers]
    return segs[int(rng.integers(len(segs)))] if segs else None


def _put(data: bytes, pos: int, value: bytes) -> bytes:
    return data[:pos] + value + data[pos + len(value):]


def _u16(value: int) -> bytes:
    return int(value & 0xFFFF).to_bytes(2, 'big')


def jpeg_sof_size(rng, data: bytes) -> Tuple[bytes, str]:
    """Rewrite the SOF's height and width (0, 1, 65535, doubled, swapped, random)."""
    sof = _segment(rng, data, (0xC0, 0xC1, 0xC2))
    if sof is None:
        return flip_bytes(rng, data)
    height = int.from_bytes(data[sof[1] + 5:sof[1] + 7], 'big')
    width = int.from_bytes(data[sof[1] + 7:sof[1] + 9], 'big')
    choice = _pick(rng, [(0, width), (height, 0), (65535, 65535), (height * 2, width),
                         (width, height), (height + 1, width), (1, 1), (8192, 8193),
                         (int(rng.integers(65536)), int(rng.integers(65536)))])
    return _put(data, sof[1] + 5, _u16(choice[0]) + _u16(choice[1])), f'jpeg.sof_size{choice}'


def jpeg_sof_components(rng, data: bytes) -> Tuple[bytes, str]:
    """Break the SOF's precision, component count, sampling factors or table ids."""
    sof = _segment(rng, data, (0xC0, 0xC1, 0xC2))
    if sof is None:
        return flip_bytes(rng, data)
    start = sof[1] + 4
    what = _pick(rng, ['precision', 'count', 'sampling', 'table'])
    if what == 'precision':
        return _put(data, start, bytes([_pick(rng, [0, 12, 16, 255])])), 'jpeg.sof_precision'
    if what == 'count':
        return _put(data, start + 5, bytes([_pick(rng, [0, 1, 2, 4, 255])])), 'jpeg.sof_count'
    comp = start + 6 + 3 * int(rng.integers(3))
    if what == 'sampling':
        return _put(data, comp + 1, bytes([_pick(rng, [0x00, 0xFF, 0x44, 0x41, 0x14])])), \
            'jpeg.sof_sampling'
    return _put(data, comp + 2, bytes([_pick(rng, [3, 4, 255])])), 'jpeg.sof_table'


def jpeg_segment_length(rng, data: bytes) -> Tuple[bytes, str]:
    """Set one segment's length to 0, 1, 2, off by one, 0xFFFF or random."""
    seg = _segment(rng, data)
    if seg is None:
        return flip_bytes(rng, data)
    length = seg[2] - seg[1] - 2
    value = _pick(rng, [0, 1, 2, length - 1, length + 1, 0xFFFF, int(rng.integers(65536))])
    return _put(data, seg[1] + 2, _u16(value)), f'jpeg.length(0x{seg[0]:02X}={value})'


def jpeg_drop_or_dup(rng, data: bytes) -> Tuple[bytes, str]:
    """Remove a segment (DQT, DHT, SOF, SOS...) or repeat it."""
    seg = _segment(rng, data)
    if seg is None:
        return flip_bytes(rng, data)
    marker, start, end = seg
    if rng.random() < 0.5:
        return data[:start] + data[end:], f'jpeg.drop(0x{marker:02X})'
    return data[:end] + data[start:end] + data[end:], f'jpeg.dup(0x{marker:02X})'


def jpeg_marker(rng, data: bytes) -> Tuple[bytes, str]:
    """Turn a marker into another: progressive, lossless, arithmetic, RSTn, EOI, APPn, SOI."""
    seg = _segment(rng, data)
    if seg is None:
        return flip_bytes(rng, data)
    new = _pick(rng, [0xC2, 0xC3, 0xC9, 0xCC, 0xD0, 0xD9, 0xE1, 0xD8, 0xFE, 0x00, 0xFF, 0xC4])
    return _put(data, seg[1] + 1, bytes([new])), f'jpeg.marker(0x{seg[0]:02X}->0x{new:02X})'


def jpeg_tables(rng, data: bytes) -> Tuple[bytes, str]:
    """Randomise the contents of a quantisation or Huffman table (counts, values, ids)."""
    seg = _segment(rng, data, (0xDB, 0xC4, 0xDD))
    if seg is None:
        return flip_bytes(rng, data)
    start, end = seg[1] + 4, seg[2]
    body = bytearray(data[start:end])
    if body:
        count = int(rng.integers(1, 6))
        for pos in rng.integers(0, len(body), count):
            body[pos] = _pick(rng, [0x00, 0xFF, 0x10, 0x1F, int(rng.integers(256))])
    return data[:start] + bytes(body) + data[end:], f'jpeg.tables(0x{seg[0]:02X})'


def jpeg_scan(rng, data: bytes) -> Tuple[bytes, str]:
    """Damage the entropy-coded data: bit flips, stray RST / EOI markers, cut before EOI."""
    sos = _segment(rng, data, (0xDA,))
    if sos is None or sos[2] >= len(data) - 2:
        return flip_bytes(rng, data)
    pos = int(rng.integers(sos[2], len(data) - 2))
    what = _pick(rng, ['flip', 'rst', 'eoi', 'cut'])
    if what == 'flip':
        return _put(data, pos, bytes([data[pos] ^ (1 << int(rng.integers(8)))])), 'jpeg.scan_flip'
    if what == 'cut':
        return data[:pos], 'jpeg.scan_cut'
    marker = b'\xff\xd9' if what == 'eoi' else bytes([0xFF, 0xD0 + int(rng.integers(8))])
    return data[:pos] + marker + data[pos:], f'jpeg.scan_{what}'


JPEG_MUTATIONS: Tuple[Callable, ...] = (
    jpeg_sof_size, jpeg_sof_components, jpeg_segment_length, jpeg_drop_or_dup, jpeg_marker,
    jpeg_tables, jpeg_scan)


# ------------------------------------------------------------------------------- generic bytes
def flip_bytes(rng, data: bytes) -> Tuple[bytes, str]:
    """Set 1-8 random bytes to random or boundary values."""
    if not data:
        return bytes([int(rng.integers(256))]), 'flip(empty)'
    buf = bytearray(data)
    for pos in rng.integers(0, len(buf), int(rng.integers(1, 9))):
        buf[pos] = _pick(rng, [0x00, 0xFF, 0x80, 0x7F, int(rng.integers(256))])
    return bytes(buf), 'flip'


def truncate(rng, data: bytes) -> Tuple[bytes, str]:
    """Cut the payload: to nothing, a few bytes, inside the header or anywhere."""
    cut = _pick(rng, [0, 1, 2, 3, 4, 10, min(len(data), 200), int(rng.integers(len(data) + 1))])
    return data[:cut], f'truncate({cut})'


def splice(rng, data: bytes, other: bytes) -> Tuple[bytes, str]:
    """Append junk or another payload, prepend garbage, or replace with random bytes."""
    what = _pick(rng, ['append', 'prepend', 'other', 'random', 'double'])
    junk = rng.integers(0, 256, int(rng.integers(1, 300)), dtype=np.uint8).tobytes()
    if what == 'append':
        return data + junk, 'splice.append'
    if what == 'prepend':
        return junk + data, 'splice.prepend'
    if what == 'other':
        return other, 'splice.other_codec'
    if what == 'double':
        return data + data, 'splice.double'
    return junk, 'splice.random'


# ------------------------------------------------------------------------------- H.264
def nal_units(data: bytes) -> List[Tuple[bytes, bytes]]:
    """(start code, NAL unit) pairs of an Annex-B buffer; bytes before the first code dropped."""
    starts = []
    pos = data.find(b'\x00\x00\x01')
    while pos >= 0:
        long_code = pos > 0 and data[pos - 1] == 0
        starts.append((pos - 1 if long_code else pos, pos + 3))
        pos = data.find(b'\x00\x00\x01', pos + 3)
    units = []
    for i, (code_at, body_at) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else len(data)
        units.append((data[code_at:body_at], data[body_at:end]))
    return units


def _join(units: Sequence[Tuple[bytes, bytes]]) -> bytes:
    return b''.join(code + body for code, body in units)


def h264_nal_header(rng, data: bytes) -> Tuple[bytes, str]:
    """Change one NAL unit's type (0..31), nal_ref_idc, or set the forbidden bit."""
    units = nal_units(data)
    if not units:
        return flip_bytes(rng, data)
    i = int(rng.integers(len(units)))
    code, body = units[i]
    if not body:
        return flip_bytes(rng, data)
    what = _pick(rng, ['type', 'type', 'ref_idc', 'forbidden'])
    old = body[0]
    if what == 'type':
        new = (old & 0xE0) | _pick(rng, [0, 1, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 20, 24, 31])
    elif what == 'ref_idc':
        new = (old & 0x9F) | (int(rng.integers(4)) << 5)
    else:
        new = old | 0x80
    units[i] = (code, bytes([new]) + body[1:])
    return _join(units), f'h264.nal_{what}({old & 0x1F}->{new & 0x1F})'


def h264_nal_units(rng, data: bytes) -> Tuple[bytes, str]:
    """Drop, duplicate or swap NAL units (SPS, PPS, SEI, slices)."""
    units = nal_units(data)
    if not units:
        return flip_bytes(rng, data)
    i = int(rng.integers(len(units)))
    kind = units[i][1][0] & 0x1F if units[i][1] else -1
    what = _pick(rng, ['drop', 'dup', 'swap'])
    if what == 'drop':
        del units[i]
    elif what == 'dup':
        units.insert(i, units[i])
    else:
        j = int(rng.integers(len(units)))
        units[i], units[j] = units[j], units[i]
    return _join(units), f'h264.{what}_nal({kind})'


def h264_start_codes(rng, data: bytes) -> Tuple[bytes, str]:
    """3 <-> 4 byte start codes, a start code removed, stray codes or zero runs inserted."""
    units = nal_units(data)
    if not units:
        return flip_bytes(rng, data)
    i = int(rng.integers(len(units)))
    what = _pick(rng, ['short', 'long', 'remove', 'stray', 'zeros', 'empty_nal'])
    code, body = units[i]
    if what in ('short', 'long', 'remove'):
        units[i] = ({'short': b'\x00\x00\x01', 'long': b'\x00\x00\x00\x01',
                     'remove': b''}[what], body)
        return _join(units), f'h264.start_code_{what}'
    pos = int(rng.integers(len(data) + 1))
    insert = {'stray': b'\x00\x00\x01', 'zeros': b'\x00' * int(rng.integers(3, 64)),
              'empty_nal': b'\x00\x00\x01\x00\x00\x01'}[what]
    return data[:pos] + insert + data[pos:], f'h264.{what}'


class _BitReader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def u(self, bits: int) -> int:
        value = 0
        for _ in range(bits):
            if self.pos >= 8 * len(self.data):
                raise ValueError('SPS ends early')
            value = (value << 1) | (self.data[self.pos >> 3] >> (7 - (self.pos & 7))) & 1
            self.pos += 1
        return value

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError('exp-Golomb code too long')
        return (1 << zeros) - 1 + self.u(zeros)

    def rest(self) -> str:
        return ''.join(str(self.u(1)) for _ in range(8 * len(self.data) - self.pos))


def _ue_bits(value: int) -> str:
    code = bin(value + 1)[2:]
    return '0' * (len(code) - 1) + code


def _unescape(rbsp: bytes) -> bytes:
    return rbsp.replace(b'\x00\x00\x03', b'\x00\x00')


def _escape(rbsp: bytes) -> bytes:
    out, zeros = bytearray(), 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


_HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}


def parse_sps(body: bytes) -> Tuple[List[List], str]:
    """SPS fields up to the cropping window as [name, 'u<n>' | 'ue', value], and the rest bits.

    ValueError for SPSs this does not follow (scaling matrices, POC type 1).
    """
    bits = _BitReader(_unescape(body[1:]))
    fields: List[List] = []

    def read(name: str, kind: str) -> int:
        value = bits.ue() if kind == 'ue' else bits.u(int(kind[1:]))
        fields.append([name, kind, value])
        return value

    profile = read('profile_idc', 'u8')
    read('constraints', 'u8')
    read('level_idc', 'u8')
    read('sps_id', 'ue')
    if profile in _HIGH_PROFILES:
        if read('chroma_format_idc', 'ue') == 3:
            read('separate_colour_plane', 'u1')
        read('bit_depth_luma_minus8', 'ue')
        read('bit_depth_chroma_minus8', 'ue')
        read('qpprime_bypass', 'u1')
        if read('scaling_matrix_present', 'u1'):
            raise ValueError('scaling matrices not followed')
    read('log2_max_frame_num_minus4', 'ue')
    poc_type = read('poc_type', 'ue')
    if poc_type == 0:
        read('log2_max_poc_lsb_minus4', 'ue')
    elif poc_type == 1:
        raise ValueError('POC type 1 not followed')
    read('max_num_ref_frames', 'ue')
    read('gaps_allowed', 'u1')
    read('width_mbs_minus1', 'ue')
    read('height_map_units_minus1', 'ue')
    if read('frame_mbs_only', 'u1') == 0:
        read('mb_adaptive', 'u1')
    read('direct_8x8', 'u1')
    if read('frame_cropping', 'u1'):
        for side in ('left', 'right', 'top', 'bottom'):
            read(f'crop_{side}', 'ue')
    return fields, bits.rest()


def write_sps(header: int, fields: Sequence[Sequence], rest: str) -> bytes:
    """The NAL unit (header byte + escaped RBSP) of `fields` followed by the `rest` bits."""
    def code(kind: str, value: int) -> str:
        if kind == 'ue':
            return _ue_bits(value)
        width = int(kind[1:])
        return format(value & ((1 << width) - 1), f'0{width}b')

    bits = ''.join(code(kind, value) for _, kind, value in fields) + rest
    bits += '0' * (-len(bits) % 8)
    rbsp = int(bits, 2).to_bytes(len(bits) // 8, 'big') if bits else b''
    return bytes([header]) + _escape(rbsp)


_SPS_VALUES = {
    'width_mbs_minus1': [0, 1, 2, 3, 5, 255, 511, 1023, 4095, 65535],
    'height_map_units_minus1': [0, 1, 2, 3, 255, 511, 4095, 65535],
    'profile_idc': [0, 66, 77, 88, 100, 110, 122, 244, 255],
    'level_idc': [0, 9, 10, 51, 52, 255],
    'chroma_format_idc': [0, 1, 2, 3, 4, 31],
    'bit_depth_luma_minus8': [0, 1, 2, 6, 7, 8, 100],
    'bit_depth_chroma_minus8': [0, 2, 6, 14],
    'max_num_ref_frames': [0, 1, 16, 17, 1000],
    'log2_max_frame_num_minus4': [0, 12, 13, 100],
    'poc_type': [0, 2, 3, 7],
    'log2_max_poc_lsb_minus4': [0, 12, 13, 200],
    'frame_mbs_only': [0, 1],
    'sps_id': [0, 1, 31, 32, 1000],
}


def h264_sps(rng, data: bytes) -> Tuple[bytes, str]:
    """Rewrite one SPS field bit-exactly: size in macroblocks, cropping, profile, depth..."""
    units = nal_units(data)
    index = [i for i, (_, body) in enumerate(units) if body and body[0] & 0x1F == 7]
    if not index:
        return h264_nal_header(rng, data)
    code, body = units[index[0]]
    try:
        fields, rest = parse_sps(body)
    except ValueError:
        return flip_bytes(rng, data)
    names = [f[0] for f in fields]
    name = _pick(rng, sorted(set(_SPS_VALUES) & set(names)) + ['crop'])
    if name == 'crop':
        at = names.index('frame_cropping')
        fields = fields[:at] + [['frame_cropping', 'u1', 1]] + [
            [f'crop_{s}', 'ue', _pick(rng, [0, 1, 4, 31, 32, 1000, 65535])]
            for s in ('left', 'right', 'top', 'bottom')] + [
            f for f in fields[at + 1:] if not f[0].startswith('crop_')]
        value = 'window'
    else:
        value = _pick(rng, _SPS_VALUES[name])
        fields[names.index(name)][2] = value
    units[index[0]] = (code, write_sps(body[0], fields, rest))
    return _join(units), f'h264.sps({name}={value})'


H264_MUTATIONS: Tuple[Callable, ...] = (h264_nal_header, h264_nal_units, h264_start_codes,
                                        h264_sps, h264_sps)


# ------------------------------------------------------------------------------- helpers
def _pick(rng, options: Sequence):
    return options[int(rng.integers(len(options)))]


def stamp_of(t_s: float) -> Tuple[int, int]:
    """(sec, nanosec) of a time in seconds, as builtin_interfaces/Time holds it."""
    sec = math.floor(t_s)
    return int(min(max(sec, I32_MIN), I32_MAX)), int((t_s - sec) * 1e9) % 1_000_000_000


def _stamp_value(rng, now_s: float) -> Tuple[Tuple[int, int], str]:
    """A stamp far past or future, at the int32 limits, or with an invalid nanosec."""
    choice = _pick(rng, ['past', 'future', 'min', 'max', 'zero', 'nanosec', 'near'])
    sec, nanosec = stamp_of(now_s)
    if choice == 'past':
        sec = max(I32_MIN, sec - _pick(rng, [61, 3600, 20_000, 10 ** 9]))
    elif choice == 'future':
        sec = min(I32_MAX, sec + _pick(rng, [6, 3600, 20_000, 10 ** 9]))
    elif choice in ('min', 'max', 'zero'):
        sec = {'min': I32_MIN, 'max': I32_MAX, 'zero': 0}[choice]
    elif choice == 'nanosec':
        nanosec = _pick(rng, [999_999_999, 1_000_000_000, U32])
    else:
        sec += int(rng.integers(-3, 4))
    return (sec, nanosec), f'stamp_{choice}'


def _int_value(rng, kind: str, current: int) -> int:
    top = _INT_MAX[kind]
    return int(_pick(rng, [0, 1, top, top - 1, top // 2, top // 2 + 1, current + 1,
                           max(current - 1, 0), int(rng.integers(0, top, dtype=np.uint64))]))


def _float_value(rng) -> float:
    return float(_pick(rng, [math.nan, math.inf, -math.inf, -0.0, -1.0, 1e-45, F32_MAX,
                             -F32_MAX, 0.5, 1.0, 1.5, 1e30]))


# ------------------------------------------------------------------------------- frames
class FrameFuzzer:
    """Generates EncodedFrame cases; `case(i)` depends only on (seed, i)."""

    def __init__(self, seed: int, seeds: Seeds, limits: ReceiveLimits = ReceiveLimits(),
                 now_s: float = 1.7e9) -> None:
        """`limits` give the boundary values worth trying (exactly at and just past each)."""
        self.seed, self.seeds, self.limits, self.now_s = seed, seeds, limits, now_s

    def good_jpeg(self, seq: int, t: int = 0) -> FrameFields:
        """A valid JPEG frame of the good stream (scale 4)."""
        data, width, height = self.seeds.jpegs[t % len(self.seeds.jpegs)]
        sec, nanosec = stamp_of(self.now_s + 0.066 * seq)
        return FrameFields(SESSION_ID, seq, 2, width * 4, height * 4, width, height, 4, 'jpeg',
                           True, data, sec, nanosec)

    def good_h264(self, seq: int, index: int) -> FrameFields:
        """Frame `index` of the seed H.264 stream (0 = the IDR), scale 2."""
        data, key = self.seeds.h264[index]
        width, height = self.seeds.h264_size
        sec, nanosec = stamp_of(self.now_s + 0.066 * seq)
        return FrameFields(SESSION_ID, seq, 1 if key else 2, width * 2, height * 2, width,
                           height, 2, 'h264', key, data, sec, nanosec)

    def case(self, index: int, seq: int) -> FrameCase:
        """Case `index`: 1-4 frames from sequence number `seq` on, at least one mutated."""
        rng = np.random.default_rng([self.seed, index])
        if rng.random() < 0.5:
            frames = [self.good_jpeg(seq, int(rng.integers(len(self.seeds.jpegs))))]
        else:
            frames = self._h264_frames(rng, seq)
        target = frames[-1] if len(frames) == 1 or rng.random() < 0.7 else \
            frames[int(rng.integers(len(frames)))]
        mutations = []
        for _ in range(int(_pick(rng, [1, 1, 1, 2, 3]))):
            if rng.random() < 0.55:
                mutations.append(self._mutate_payload(rng, target))
            else:
                mutations.append(self._mutate_field(rng, target))
        return FrameCase(index, frames, mutations)

    def _h264_frames(self, rng, seq: int) -> List[FrameFields]:
        """An IDR and P frames; sometimes P frames only (joined mid-GOP), lost or reordered."""
        count = len(self.seeds.h264)
        what = _pick(rng, ['idr', 'idr_p', 'p_only', 'lost', 'reordered', 'other_size'])
        indices = {'idr': [0], 'idr_p': [0, 1, 2], 'p_only': [3, 4],
                   'lost': [0, 1, 3], 'reordered': [0, 2, 1], 'other_size': [0, 1]}[what]
        frames = [self.good_h264(seq + k, i % count) for k, i in enumerate(indices)]
        if what == 'other_size':  # a P frame of one stream after the IDR of another size
            data, width, height = self.seeds.h264_other
            frames[0] = replace(frames[0], data=data, width=width, height=height,
                                orig_width=2 * width, orig_height=2 * height)
        return frames

    def _mutate_payload(self, rng, frame: FrameFields) -> str:
        roll = rng.random()
        other = self.seeds.jpegs[0][0] if frame.codec == 'h264' else self.seeds.h264[0][0]
        if roll < 0.15:
            frame.data, label = truncate(rng, frame.data)
        elif roll < 0.3:
            frame.data, label = flip_bytes(rng, frame.data)
        elif roll < 0.38:
            frame.data, label = splice(rng, frame.data, other)
        elif roll < 0.4:
            size = self.limits.max_payload_bytes + int(rng.integers(2))  # at, just past
            frame.data = b'\xff' * size
            label = f'payload_bytes({len(frame.data)})'
        else:
            table = JPEG_MUTATIONS if frame.codec == 'jpeg' else H264_MUTATIONS
            frame.data, label = _pick(rng, table)(rng, frame.data)
        return label

    def _mutate_field(self, rng, frame: FrameFields) -> str:
        name = _pick(rng, ['seq', 'session_id', 'kind', 'sizes', 'sizes', 'scale', 'codec',
                           'keyframe', 'stamp', 'frame_id'])
        if name in ('seq', 'session_id'):
            setattr(frame, name, _int_value(rng, 'uint64', getattr(frame, name)))
        elif name == 'kind':
            frame.kind = _pick(rng, [0, 1, 2, 3, 4, 5, 128, 255])
        elif name == 'scale':
            frame.scale = _pick(rng, [0, 1, 2, 3, 4, 5, 8, 255])
        elif name == 'codec':
            frame.codec = _pick(rng, STRINGS + ('h264' if frame.codec == 'jpeg' else 'jpeg',))
        elif name == 'keyframe':
            frame.keyframe = not frame.keyframe
        elif name == 'frame_id':
            frame.frame_id = _pick(rng, STRINGS)
        elif name == 'stamp':
            (frame.stamp_sec, frame.stamp_nanosec), label = _stamp_value(rng, self.now_s)
            return label
        else:
            return self._mutate_sizes(rng, frame)
        return f'field.{name}'

    def _mutate_sizes(self, rng, frame: FrameFields) -> str:
        """Declared sizes: zero, huge, at or past the limits, mismatching payload or scale."""
        side = int(math.isqrt(self.limits.max_input_pixels))
        out_side = int(math.isqrt(self.limits.max_output_pixels))
        what = _pick(rng, ['zero', 'huge', 'u32', 'limit_in', 'limit_out', 'mismatch', 'swap',
                           'orig_off', 'orig_huge'])
        w, h, s = frame.width, frame.height, max(frame.scale, 1)
        sizes = {'zero': (0, h, 0, h * s), 'huge': (8192, 8192, 8192 * s, 8192 * s),
                 'u32': (U32, U32, U32, U32), 'limit_in': (side + 1, side, (side + 1) * s,
                                                           side * s),
                 'limit_out': (out_side // s + 1, out_side // s, (out_side // s + 1) * s,
                               out_side),
                 'mismatch': (w + 1, h, (w + 1) * s, h * s), 'swap': (h, w, h * s, w * s),
                 'orig_off': (w, h, w * s + s, h * s - 1),
                 'orig_huge': (w, h, min(U32, w * 4096), min(U32, h * 4096))}[what]
        frame.width, frame.height, frame.orig_width, frame.orig_height = (
            int(min(max(v, 0), U32)) for v in sizes)
        return f'field.sizes_{what}'


# ------------------------------------------------------------------------------- stats
def good_stats(topic: str, seq: int, now_s: float, frame_bytes: int = 4000) -> StatsCase:
    """A plausible report about frame `seq` sent 50 ms before `now_s`."""
    stage = {'cloud_stats': 'cloud_rx', 'edge_stats': 'edge', 'mask': ''}[topic]
    fields: Dict[str, object] = {
        'stamp': stamp_of(now_s - 0.05), 'arrival_stamp': stamp_of(now_s - 0.01),
        'stage': stage, 'seq': seq, 'kind': 2, 'frame_bytes': frame_bytes, 'width': 120,
        'height': 90, 'probe_agreement_miou': math.nan}
    for name, kind in STATS_FIELDS.items():
        if name not in fields and kind in _INT_MAX:
            fields[name] = seq
        elif name not in fields and kind == 'float':
            fields[name] = 5.0
    return StatsCase(seq, topic, fields)


class StatsFuzzer:
    """Generates controller inputs (cloud_stats, edge_stats, mask stamps) around a clock."""

    def __init__(self, seed: int) -> None:
        """Cases depend only on (seed, index) and the `now_s` / `seq` they are built around."""
        self.seed = seed

    def case(self, index: int, seq: int, now_s: float) -> StatsCase:
        """Case `index`: a report about frame `seq` with 1-4 fields mutated."""
        rng = np.random.default_rng([self.seed, index, 1])
        topic = _pick(rng, ['cloud_stats', 'cloud_stats', 'edge_stats', 'mask'])
        case = good_stats(topic, seq, now_s, int(rng.integers(100, 20_000)))
        case.index = index
        if topic == 'cloud_stats' and rng.random() < 0.3:
            case.fields['stage'] = 'cloud'
        names = sorted(STATS_FIELDS.keys() - {'header'}) + ['stamp']
        for _ in range(int(rng.integers(1, 5))):
            name = _pick(rng, names)
            kind = STATS_FIELDS.get(name, 'time')
            if kind == 'time':
                case.fields[name], label = _stamp_value(rng, now_s)
            elif kind in _INT_MAX:
                case.fields[name], label = _int_value(rng, kind, int(case.fields[name])), name
            elif kind == 'float':
                case.fields[name], label = _float_value(rng), name
            else:
                case.fields[name], label = _pick(rng, STRINGS + ('cloud', 'cloud_rx')), name
            case.mutations.append(f'{case.topic}.{label}')
        return case
