"""Fuzzing at unit level: receiver + tiny CPU engine + controller logic, and kept crash cases.

CLOUDSEG_FUZZ_CASES (default 10,000) sets the number of cases: 60 % frames through the
receiver (every ENGINE_EVERY-th accepted frame also through the engine), 40 % controller
inputs. `cloudseg fuzz` runs the same targets for longer.
"""
import glob
import json
import os
import random

import pytest
from rclpy.serialization import serialize_message

from cloudseg_ros.core import fuzz
from cloudseg_ros.core.delivery import MAX_TRACKED
from cloudseg_ros.core.receiver import ReceiveError, ReceiveLimits, StreamReceiver
from cloudseg_ros.msg import EncodedFrame, PipelineStats
from cloudseg_ros.ros.frames import meta_from_msg
from cloudseg_ros.ros.zenoh_uplink import decode_payload
from cloudseg_ros.tools import fuzz as fuzz_tool

CASES = int(os.environ.get('CLOUDSEG_FUZZ_CASES', '10000'))
FRAME_CASES = CASES * 6 // 10
STATS_CASES = CASES - FRAME_CASES
# The engine runs on every ENGINE_EVERY-th accepted frame of at most ENGINE_MAX_PIXELS: even
# the tiny networks take 0.1-0.7 s for a 256x192 mask on a busy 2-core machine.
ENGINE_EVERY = 4
ENGINE_MAX_PIXELS = 10_000
SEED = 12
CDR_CASES = CASES // 5  # mutated CDR messages, as a robot's zenoh link could deliver them
# Small bounds keep the boundary cases cheap (a payload at max_payload_bytes is allocated).
LIMITS = ReceiveLimits(max_input_pixels=100_000, max_output_pixels=300_000,
                       max_payload_bytes=1 << 20)
WARMUP_CASES = 300  # allocator pools, decoder and engine caches fill up first
MAX_RSS_GROWTH_MB = 64.0
CRASHES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), 'crashes', '*.json')))


@pytest.fixture(scope='module')
def seeds():
    return fuzz.make_seeds()


@pytest.fixture(scope='module')
def engine(tiny_models):
    import torch
    threads = torch.get_num_threads()
    yield fuzz_tool.make_engine(tiny_models, threads=1)
    torch.set_num_threads(threads)


def _fail_on(result):
    details = '\n'.join(f'case {c.index} [{", ".join(c.case["mutations"])}]:\n{c.trace}'
                        for c in result.crashes[:5])
    assert not result.crashes, f'{len(result.crashes)} crashes, first ones:\n{details}'


def test_frames_through_receiver_and_engine(seeds, engine):
    target = fuzz_tool.FrameTarget(fuzz.FrameFuzzer(SEED, seeds, LIMITS), LIMITS, engine,
                                   ENGINE_EVERY, ENGINE_MAX_PIXELS)
    _fail_on(fuzz_tool.run_frames('receiver', SEED, WARMUP_CASES, target))
    result = fuzz_tool.run_frames('receiver', SEED, FRAME_CASES - WARMUP_CASES, target,
                                  first=WARMUP_CASES)
    _fail_on(result)
    outcomes = target.outcomes
    # Both kinds of outcome are frequent: the cases reach the decoders, not only the checks.
    assert outcomes['rejected'] > FRAME_CASES // 4 and outcomes['accepted'] > FRAME_CASES
    assert outcomes['segmented'] >= FRAME_CASES // 100
    assert result.rss_growth_mb < MAX_RSS_GROWTH_MB


def test_controller_inputs():
    _fail_on(fuzz_tool.run_controller(SEED, WARMUP_CASES))
    result = fuzz_tool.run_controller(SEED, STATS_CASES, first=WARMUP_CASES)
    _fail_on(result)
    assert result.outcomes['rejected'] > 0 and result.outcomes['accepted'] > STATS_CASES
    assert result.rss_growth_mb < 16


def test_mutated_cdr_from_the_zenoh_uplink_is_refused_or_handled(seeds):
    """Bytes from a robot's zenoh link, CDR-decoded as the cloud does (`decode_payload`): a
    hostile length or a cut message is a ValueError, and what decodes meets the receiver's
    checks; nothing else escapes and memory stays flat."""
    rng = random.Random(SEED)
    good = [serialize_message(fuzz_tool.frame_msg(fuzz.FrameFuzzer(SEED, seeds, LIMITS)
                                                  .good_jpeg(seq))) for seq in (1, 2, 3)]
    outcomes = {'undecodable': 0, 'rejected': 0, 'accepted': 0}
    rss_start = fuzz_tool.rss_mb()
    for _ in range(CDR_CASES):
        receiver = StreamReceiver(LIMITS)
        try:
            msg = decode_payload(_mutate_cdr(rng, rng.choice(good)), EncodedFrame, 'fuzz')
        except ValueError:
            outcomes['undecodable'] += 1
            continue
        try:
            receiver.receive(meta_from_msg(msg), msg.data)
            outcomes['accepted'] += 1
        except ReceiveError:
            outcomes['rejected'] += 1
    assert min(outcomes.values()) > CDR_CASES // 50, outcomes
    assert fuzz_tool.rss_mb() - rss_start < 16, 'memory grew'


def _mutate_cdr(rng: random.Random, payload: bytes) -> bytes:
    """1-4 of: a length-like word set huge, a cut, a bit flip, trailing garbage."""
    data = bytearray(payload)
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        if op < 0.4 and len(data) > 8:
            at = rng.randrange(len(data) - 4)
            data[at:at + 4] = rng.choice([b'\xff\xff\xff\xff', b'\xff\xff\xff\x7f',
                                          b'\x00\x00\x00\x80', rng.randbytes(4)])
        elif op < 0.6 and len(data) > 1:
            data = data[:rng.randrange(1, len(data))]
        elif op < 0.8:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        else:
            data += rng.randbytes(rng.randrange(64))
    return bytes(data)


def test_arrival_reports_alone_stay_bounded():
    """A flood of cloud_rx reports with fresh seqs and no edge_stats (a stranger, or an edge
    whose stats are lost) must not grow the delivery table without bound."""
    target = fuzz_tool.ControllerTarget()
    for index in range(MAX_TRACKED + 300):
        target.send(fuzz.good_stats('cloud_stats', index * 7919, 1.7e9 + index * 0.001),
                    1.7e9 + index * 0.001)
    target.tick(1.7e9 + MAX_TRACKED * 0.001 + 0.3)
    assert len(target.uplink.delivery._sent) <= MAX_TRACKED


@pytest.mark.parametrize('path', CRASHES, ids=[os.path.basename(p) for p in CRASHES])
def test_kept_crash_cases_are_rejected_cleanly(path, engine):
    fuzz_tool.replay(path, engine)


def test_kept_jpeg_with_unnamed_subsampling_is_a_receive_error():
    """simplejpeg raised KeyError from its subsampling table (receiver-s0-c543.json)."""
    with open(os.path.join(os.path.dirname(__file__), 'crashes', 'receiver-s0-c543.json')) as f:
        case = fuzz_tool.case_from_json(json.load(f)['case'])
    frame = case.frames[-1]
    msg = fuzz_tool.frame_msg(frame)
    with pytest.raises(ReceiveError, match='JPEG'):
        StreamReceiver().receive(meta_from_msg(msg), msg.data)


def test_cases_depend_only_on_seed_and_index(seeds):
    first = fuzz.FrameFuzzer(3, seeds).case(41, 100)
    again = fuzz.FrameFuzzer(3, seeds).case(41, 100)
    other = fuzz.FrameFuzzer(4, seeds).case(41, 100)
    assert first == again and first != other
    assert fuzz.StatsFuzzer(3).case(7, 7, 1e9) == fuzz.StatsFuzzer(3).case(7, 7, 1e9)
    restored = fuzz_tool.case_from_json(json.loads(json.dumps(
        fuzz_tool.case_json('receiver', first))), 41)
    assert restored == first


def test_field_tables_cover_every_message_field():
    def names(msg_type):
        return {name.lstrip('_') for name in msg_type.get_fields_and_field_types()}
    assert set(fuzz.FRAME_FIELDS) == names(EncodedFrame)
    assert set(fuzz.STATS_FIELDS) == names(PipelineStats)


def test_sps_rewrite_is_bit_exact_and_changes_the_size(seeds):
    units = fuzz.nal_units(seeds.h264[0][0])
    assert fuzz.nal_units(seeds.h264[0][0]) and b''.join(c + b for c, b in units) == \
        seeds.h264[0][0]
    sps = next(body for _, body in units if body[0] & 0x1F == 7)
    fields, rest = fuzz.parse_sps(sps)
    assert fuzz.write_sps(sps[0], fields, rest) == sps
    values = {name: value for name, _, value in fields}
    assert ((values['width_mbs_minus1'] + 1) * 16, (values['height_map_units_minus1'] + 1) * 16
            ) == (64, 48)
    for field in fields:
        if field[0] == 'width_mbs_minus1':
            field[2] = 4095
    assert fuzz.parse_sps(fuzz.write_sps(sps[0], fields, rest))[0] == fields


def test_every_mutation_family_occurs(seeds):
    fuzzer = fuzz.FrameFuzzer(0, seeds, LIMITS)
    labels = {m.split('(')[0] for i in range(2000) for m in fuzzer.case(i, 1).mutations}
    for family in ('jpeg.sof_size', 'jpeg.length', 'jpeg.marker', 'jpeg.drop', 'jpeg.scan_cut',
                   'h264.sps', 'h264.nal_type', 'h264.drop_nal', 'h264.start_code_short',
                   'truncate', 'flip', 'field.seq', 'field.codec', 'field.sizes_huge',
                   'field.sizes_mismatch', 'field.scale', 'field.session_id', 'stamp_future',
                   'payload_bytes'):
        assert family in labels, family


def test_command_writes_crashing_inputs_and_fails(tmp_path, monkeypatch, capsys):
    crash_dir = str(tmp_path / 'crashes')
    assert fuzz_tool.main(['--cases', '40', '--seed', '1', '--target', 'receiver',
                           '--crash-dir', crash_dir]) == 0
    assert 'receiver: 40 cases' in capsys.readouterr().out

    def broken(self, meta, data, arrival_s=None):
        raise RuntimeError('boom')
    monkeypatch.setattr(StreamReceiver, 'receive', broken)
    assert fuzz_tool.main(['--cases', '3', '--target', 'receiver', '--crash-dir',
                           crash_dir]) == 1
    saved = sorted(os.listdir(crash_dir))
    assert len(saved) == 3 and 'RuntimeError: boom' in capsys.readouterr().out
    with pytest.raises(RuntimeError, match='boom'):
        fuzz_tool.replay(os.path.join(crash_dir, saved[0]))


def test_command_controller_target(capsys):
    assert fuzz_tool.main(['--cases', '200', '--seed', '5', '--target', 'controller']) == 0
    assert 'controller: 200 cases' in capsys.readouterr().out
