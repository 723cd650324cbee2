"""`cloudseg fuzz`: seeded fuzz cases against the receiver, the engine and the controller logic.

Each target does with a message what the node does with it, through the same functions, minus
the publishing (see core/fuzz.py for what the cases are):

- receiver: EncodedFrame -> `meta_from_msg` -> `StreamReceiver.receive` -> `cloud_stats_msg`
  (CloudNode.on_frame); a probe is paired with its twin by stamp (`check_probe_twin`);
- engine: the same, then every accepted frame is super-resolved and segmented and its mask
  turned into the node's outputs (overlay, PNG, mono8 Image);
- controller: PipelineStats / mask stamps through the ControllerNode's stamp checks into
  core/uplink.py's UplinkController (delivery tracker, bandwidth estimator, latency split,
  policy), with a decision every few messages.

After every case a good frame (a JPEG or an H.264 IDR, alternately) must decode to exactly
the expected image, and the controller must still produce a bounded estimate and a profile
entry. Exceptions other than the documented rejections (ReceiveError, EngineError; none in the
controller) are crashes: each is written as JSON to --crash-dir, and `--replay FILE` runs one
again (test/fuzz/crashes/ keeps them as regression cases). The exit status is 1 if anything
crashed, a good frame was not served, or memory grew past --max-rss-growth-mb.
"""
import argparse
import json
import math
import os
import resource
import sys
import tempfile
import time
import traceback
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage
from std_msgs.msg import Header

from cloudseg_ros.core import fuzz
from cloudseg_ros.core.codecs import FrameDecoder
from cloudseg_ros.core.imageops import upsample_bilinear
from cloudseg_ros.core.mask_codec import encode_mask_png
from cloudseg_ros.core.metrics import confusion_matrix, mean_iou
from cloudseg_ros.core.palette import overlay
from cloudseg_ros.core.peer_input import stamp_plausible
from cloudseg_ros.core.profile import load_profile
from cloudseg_ros.core.receiver import ReceiveError, ReceiveLimits, StreamReceiver, \
    check_probe_twin
from cloudseg_ros.core.uplink import UplinkController
from cloudseg_ros.msg import ControllerState, EncodedFrame, PipelineStats
from cloudseg_ros.paths import package_file
from cloudseg_ros.ros.conversions import mask_to_image_msg, stamp_to_s, uint8_field
from cloudseg_ros.ros.frames import cloud_stats_msg, meta_from_msg

TARGETS = ('receiver', 'engine', 'controller', 'all')
RECENT_FRAMES = 16  # as the cloud node keeps per robot to pair probes
MAX_CLOCK_OFFSET_S = 5.0  # the controller's default max_clock_offset_s
MAX_REPORT_AGE_S = 60.0   # ...and its limit on how old a report may be
TICK_EVERY = 8  # controller decisions: one per this many messages
RSS_EVERY = 10  # cases between two looks at the resident set size


class NotServed(AssertionError):
    """A good frame after a bad one was refused or decoded wrongly."""


# ------------------------------------------------------------------------------- messages
def frame_msg(frame: fuzz.FrameFields) -> EncodedFrame:
    """The EncodedFrame a peer would send (the message classes check every field's type)."""
    msg = EncodedFrame(
        header=Header(stamp=Time(sec=frame.stamp_sec, nanosec=frame.stamp_nanosec),
                      frame_id=frame.frame_id),
        session_id=frame.session_id, seq=frame.seq, kind=frame.kind,
        orig_width=frame.orig_width, orig_height=frame.orig_height, width=frame.width,
        height=frame.height, scale=frame.scale, codec=frame.codec, keyframe=frame.keyframe)
    msg.data = uint8_field(frame.data)
    return msg


def stats_msg(case: fuzz.StatsCase) -> PipelineStats:
    """The PipelineStats of a case ('mask' cases use only the header stamp)."""
    values = dict(case.fields)
    sec, nanosec = values.pop('stamp')
    arrival = values.pop('arrival_stamp')
    return PipelineStats(header=Header(stamp=Time(sec=sec, nanosec=nanosec)),
                         arrival_stamp=Time(sec=arrival[0], nanosec=arrival[1]), **values)


# ------------------------------------------------------------------------------- receiver
class FrameTarget:
    """One robot's stream on the cloud: receiver, recent frames, optionally the engine."""

    def __init__(self, fuzzer: fuzz.FrameFuzzer, limits: ReceiveLimits, engine=None,
                 engine_every: int = 1, engine_max_pixels: int = 1 << 62) -> None:
        """`engine`: a SegEngine, or None for the receiver only; every `engine_every`-th
        accepted frame of at most `engine_max_pixels` (original size) is segmented."""
        self.fuzzer = fuzzer
        self.receiver = StreamReceiver(limits)
        self.engine = engine
        self.engine_every = max(1, engine_every)
        self.engine_max_pixels = engine_max_pixels
        self.recent: 'OrderedDict[int, object]' = OrderedDict()
        self.outcomes: Counter = Counter()
        self._accepted = 0
        self._good_count = 0
        self._expected = self._expected_images()

    def _expected_images(self) -> Dict[str, np.ndarray]:
        jpeg = self.fuzzer.good_jpeg(1)
        idr = self.fuzzer.good_h264(1, 0)
        return {'jpeg': FrameDecoder().decode('jpeg', jpeg.data, jpeg.width, jpeg.height),
                'h264': FrameDecoder().decode('h264', idr.data, idr.width, idr.height)}

    def send(self, frame: fuzz.FrameFields) -> Optional[object]:
        """Deliver one frame as CloudNode.on_frame does; the decoded frame or None (rejected)."""
        msg = frame_msg(frame)
        try:
            decoded = self.receiver.receive(meta_from_msg(msg), msg.data)
        except ReceiveError:
            self.outcomes['rejected'] += 1
            return None
        self.outcomes['accepted'] += 1
        cloud_stats_msg(msg.header, Time(), decoded, self.receiver, 0, {}, 0, 0.0,
                        stage='cloud_rx')
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        if msg.kind == EncodedFrame.KIND_PROBE:
            self._probe(decoded, self.recent.get(stamp_ns))
        else:
            self.recent[stamp_ns] = decoded
            while len(self.recent) > RECENT_FRAMES:
                self.recent.popitem(last=False)
            self._segment(decoded)
        return decoded

    def _run_engine(self, frame) -> bool:
        if self.engine is None or frame.meta.orig_width * frame.meta.orig_height > \
                self.engine_max_pixels:
            return False
        self._accepted += 1
        return self._accepted % self.engine_every == 0

    def _segment(self, frame) -> None:
        """Engine + the cloud node's outputs of one frame."""
        if not self._run_engine(frame):
            return
        from cloudseg_ros.inference.engine import EngineError, EngineInput
        meta = frame.meta
        try:
            out = self.engine.process([EngineInput(frame.rgb, meta.scale,
                                                   (meta.orig_width, meta.orig_height))])[0]
        except EngineError:
            self.outcomes['engine_rejected'] += 1
            return
        mask = out.mask
        if mask.shape != (meta.orig_height, meta.orig_width):
            raise AssertionError(f'mask {mask.shape} for a {meta.orig_width}x'
                                 f'{meta.orig_height} original')
        background = upsample_bilinear(frame.rgb, (mask.shape[1], mask.shape[0]))
        overlay(background, mask, self.engine.colors, 0.5, self.engine.ignore_index)
        encode_mask_png(mask)
        mask_to_image_msg(mask, Header())
        self.outcomes['segmented'] += 1

    def _probe(self, probe, twin) -> None:
        """The accuracy watchdog: pipeline mask of the twin vs the probe's own mask."""
        if twin is None or not self._run_engine(probe):
            return
        from cloudseg_ros.inference.engine import EngineError, EngineInput
        try:
            check_probe_twin(probe.meta, (twin.meta.orig_width, twin.meta.orig_height))
            mask = self.engine.process([EngineInput(twin.rgb, twin.meta.scale, (
                probe.meta.width, probe.meta.height))])[0].mask
            hr_mask = self.engine.segment_hr(probe.rgb)
        except (EngineError, ReceiveError):
            self.outcomes['probe_rejected'] += 1
            return
        mean_iou(confusion_matrix(mask, hr_mask, self.engine.num_classes, ignore_index=None))
        self.outcomes['probes'] += 1

    def run(self, case: fuzz.FrameCase) -> None:
        """Send the case's frames, then a good frame that must be served exactly."""
        for frame in case.frames:
            self.send(frame)
        self.check_good(max(f.seq for f in case.frames) + 1)

    def check_good(self, seq: int) -> None:
        """A good JPEG or H.264 IDR (alternately) decodes to the expected image."""
        self._good_count += 1
        codec = 'jpeg' if self._good_count % 2 else 'h264'
        seq %= 1 << 64
        good = self.fuzzer.good_jpeg(seq) if codec == 'jpeg' else self.fuzzer.good_h264(seq, 0)
        decoded = self.send(good)
        if decoded is None or not np.array_equal(decoded.rgb, self._expected[codec]):
            raise NotServed(f'the good {codec} frame after the case was not served')


# ------------------------------------------------------------------------------- controller
def _stamp_ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


@dataclass
class ControllerTarget:
    """What ControllerNode's callbacks do with its inputs (core/uplink.py), on a set clock."""

    uplink: UplinkController = field(default_factory=lambda: UplinkController(
        load_profile(package_file('config', 'profile.yaml')).front))
    outcomes: Counter = field(default_factory=Counter)
    accuracy: float = math.nan

    def _plausible(self, now_s: float, *stamps) -> bool:
        ok = all(stamp_plausible(stamp_to_s(s), now_s, MAX_CLOCK_OFFSET_S,
                                 MAX_CLOCK_OFFSET_S + MAX_REPORT_AGE_S) for s in stamps)
        self.outcomes['accepted' if ok else 'rejected'] += 1
        return ok

    def send(self, case: fuzz.StatsCase, now_s: float) -> None:
        """One message on `case.topic`, received at `now_s`."""
        msg = stats_msg(case)
        if case.topic == 'mask':
            mask = CompressedImage(header=msg.header)
            if self._plausible(now_s, mask.header.stamp):
                self.uplink.on_mask(_stamp_ns(mask.header.stamp),
                                    (now_s - stamp_to_s(mask.header.stamp)) * 1e3)
        elif case.topic == 'edge_stats':
            self.uplink.on_sent(now_s, msg.seq, msg.frame_bytes)
        else:
            plausible = self._plausible(now_s, msg.header.stamp, msg.arrival_stamp)
            if msg.stage == 'cloud_rx':
                stamps = ((stamp_to_s(msg.header.stamp), stamp_to_s(msg.arrival_stamp))
                          if plausible else (None, None))
                self.uplink.on_arrival(msg.seq, *stamps, msg.frame_bytes)
            elif plausible and 0.0 <= msg.probe_agreement_miou <= 1.0:
                self.accuracy = msg.probe_agreement_miou
            elif plausible and msg.stage == 'cloud':
                self.uplink.on_cloud_timing(_stamp_ns(msg.header.stamp), msg.queue_ms,
                                            msg.inference_ms)

    def tick(self, now_s: float) -> None:
        """The update timer: a decision and the state message; checks they are sane."""
        state = self.uplink.update(now_s, self.accuracy)
        self.accuracy = math.nan
        cfg = self.uplink.estimator.config
        if not cfg.min_kbps <= state.estimate_kbps <= cfg.max_kbps:
            raise AssertionError(f'estimate {state.estimate_kbps} kbps outside its bounds')
        if state.decision.entry not in self.uplink.policy.front:
            raise AssertionError('the decision is not a profile entry')
        ControllerState(bandwidth_estimate_kbps=state.estimate_kbps,
                        link_latency_ms=(math.nan if state.link_latency_ms is None
                                         else state.link_latency_ms),
                        config_name=state.decision.entry.name, reason=state.decision.reason)

    def run(self, case: fuzz.StatsCase, now_s: float) -> None:
        """The case, then good reports of the next frame (sent, arrived), then maybe a tick."""
        self.send(case, now_s)
        seq = case.index + 1
        self.send(fuzz.good_stats('edge_stats', seq, now_s), now_s)
        self.send(fuzz.good_stats('cloud_stats', seq, now_s), now_s)
        if case.index % TICK_EVERY == 0:
            self.tick(now_s)


# ------------------------------------------------------------------------------- runs
@dataclass
class Crash:
    """A case that raised something other than a documented rejection."""

    target: str
    seed: int
    index: int
    error: str
    trace: str
    case: dict


@dataclass
class RunResult:
    """What a run saw."""

    target: str
    cases: int = 0
    crashes: List[Crash] = field(default_factory=list)
    outcomes: Counter = field(default_factory=Counter)
    rss_growth_mb: float = 0.0
    seconds: float = 0.0


def rss_mb() -> float:
    """Resident set size of this process now, MB (Linux)."""
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2 ** 20


def case_json(target: str, case) -> dict:
    """A case as JSON (for crash files)."""
    if isinstance(case, fuzz.FrameCase):
        return {'kind': 'frames', 'mutations': case.mutations,
                'frames': [f.to_json() for f in case.frames]}
    return {'kind': 'stats', 'topic': case.topic, 'mutations': case.mutations,
            'fields': case.fields}


def case_from_json(raw: dict, index: int = 0):
    """Inverse of `case_json`."""
    if raw['kind'] == 'frames':
        return fuzz.FrameCase(index, [fuzz.FrameFields.from_json(f) for f in raw['frames']],
                              raw['mutations'])
    fields = dict(raw['fields'])
    for name in ('stamp', 'arrival_stamp'):
        fields[name] = tuple(fields[name])
    return fuzz.StatsCase(index, raw['topic'], fields, raw['mutations'])


def _record(result: RunResult, target: str, seed: int, index: int, case, err: Exception):
    result.crashes.append(Crash(target, seed, index, f'{type(err).__name__}: {err}'[:500],
                                traceback.format_exc(), case_json(target, case)))


def _run_cases(result: RunResult, seed: int, indices: range, next_case, run_case, target,
               progress=None) -> RunResult:
    """Shared loop: build each case, run it, record what escapes, sample RSS, report."""
    start, base_rss = time.perf_counter(), rss_mb()
    for index in indices:
        case = next_case(index)
        try:
            run_case(case, index)
        except Exception as err:  # noqa: B902 - everything undocumented is a finding
            _record(result, result.target, seed, index, case, err)
        result.cases += 1
        if result.cases % RSS_EVERY == 0:
            result.rss_growth_mb = max(result.rss_growth_mb, rss_mb() - base_rss)
        if progress:
            progress(result)
    result.outcomes = target.outcomes
    result.seconds = time.perf_counter() - start
    return result


def run_frames(target_name: str, seed: int, cases: int, target: FrameTarget,
               first: int = 0, progress=None) -> RunResult:
    """Frame cases `first`..`first + cases - 1` through `target`."""
    seq = 1

    def next_case(index: int):
        nonlocal seq
        case = target.fuzzer.case(index, seq)
        seq = (max(f.seq for f in case.frames) + 2) % (1 << 64)
        return case

    return _run_cases(RunResult(target_name), seed, range(first, first + cases), next_case,
                      lambda case, index: target.run(case), target, progress)


def _controller_now_s(index: int) -> float:
    return 1.7e9 + 0.02 * index  # 50 messages per second of the controller's clock


def run_controller(seed: int, cases: int, first: int = 0, progress=None) -> RunResult:
    """Stats cases `first`..`first + cases - 1` through a fresh ControllerTarget."""
    target, fuzzer = ControllerTarget(), fuzz.StatsFuzzer(seed)
    return _run_cases(RunResult('controller'), seed, range(first, first + cases),
                      lambda index: fuzzer.case(index, index, _controller_now_s(index)),
                      lambda case, index: target.run(case, _controller_now_s(index)),
                      target, progress)


def write_crashes(folder: str, crashes: Sequence[Crash]) -> List[str]:
    """One JSON file per crash; returns the paths."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    for crash in crashes:
        path = os.path.join(folder, f'{crash.target}-s{crash.seed}-c{crash.index}.json')
        with open(path, 'w') as f:
            json.dump(crash.__dict__, f, indent=1)
        paths.append(path)
    return paths


def replay(path: str, engine=None, limits: ReceiveLimits = ReceiveLimits()) -> None:
    """Run a saved case again on fresh state; raises what it raises (None when fixed)."""
    with open(path) as f:
        saved = json.load(f)
    case = case_from_json(saved['case'], saved['index'])
    if saved['case']['kind'] == 'stats':
        ControllerTarget().run(case, stamp_to_s(Time(sec=case.fields['arrival_stamp'][0])))
        return
    fuzzer = fuzz.FrameFuzzer(saved['seed'], fuzz.make_seeds(), limits)
    target = FrameTarget(fuzzer, limits, engine)
    target.check_good(case.frames[0].seq - 1)
    target.run(case)


# ------------------------------------------------------------------------------- command
def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog='cloudseg fuzz', description=__doc__.split('\n')[0])
    parser.add_argument('--cases', type=int, default=10_000, help='cases per target')
    parser.add_argument('--seed', type=int, default=0, help='cases depend only on this')
    parser.add_argument('--first', type=int, default=0, help='index of the first case')
    parser.add_argument('--target', choices=TARGETS, default='all')
    parser.add_argument('--crash-dir', default='fuzz-crashes', help='where crashes are written')
    parser.add_argument('--models', default='',
                        help="weights folder for the engine ('' = tiny random-init networks)")
    parser.add_argument('--engine-every', type=int, default=0,
                        help='segment every Nth accepted frame (default: 1 for --target '
                             'engine, 8 for all)')
    parser.add_argument('--max-input-pixels', type=int, default=ReceiveLimits.max_input_pixels)
    parser.add_argument('--max-output-pixels', type=int,
                        default=ReceiveLimits.max_output_pixels)
    parser.add_argument('--max-payload-bytes', type=int,
                        default=ReceiveLimits.max_payload_bytes)
    parser.add_argument('--max-rss-growth-mb', type=float, default=500.0)
    parser.add_argument('--replay', nargs='+', default=[], metavar='FILE',
                        help='run saved crash files instead of generating cases')
    args = parser.parse_args(argv)
    if args.cases < 1 or args.engine_every < 0:
        parser.error('--cases must be >= 1 and --engine-every >= 0')
    return args


def make_engine(models_dir: str, threads: int = 1):
    """A CPU SegEngine on `models_dir`, or on tiny random-init networks written to a temp dir.

    Sets torch's intra-op threads (process-wide) to `threads`: fuzzed frames are small, and on a
    busy machine two threads made a 16x16 frame take 2 s instead of 15 ms.
    """
    import torch

    from cloudseg_ros.inference import model_files
    from cloudseg_ros.inference.engine import EngineConfig, SegEngine
    torch.set_num_threads(threads)
    if not models_dir:
        models_dir = model_files.write_tiny_models(tempfile.mkdtemp(prefix='cloudseg-fuzz-'),
                                                   scales=(2, 3, 4))
    return SegEngine(EngineConfig(
        seg_checkpoint=model_files.seg_checkpoint(models_dir),
        sr_checkpoints=model_files.sr_checkpoints(models_dir, 'aware'),
        sr_mode='model', device='cpu', warmup=False))


def _progress(every: int):
    def report(result: RunResult) -> None:
        if result.cases % every == 0:
            print(f'{result.target}: {result.cases} cases, {len(result.crashes)} crashes, '
                  f'RSS +{result.rss_growth_mb:.0f} MB', flush=True)
    return report


def _summary(result: RunResult) -> None:
    outcomes = ', '.join(f'{k} {v}' for k, v in sorted(result.outcomes.items()))
    print(f'{result.target}: {result.cases} cases in {result.seconds:.1f} s; {outcomes}; '
          f'{len(result.crashes)} crashes; RSS growth {result.rss_growth_mb:.0f} MB')
    for crash in result.crashes[:20]:
        print(f'  case {crash.index}: {crash.error} '
              f"[{', '.join(crash.case['mutations'])}]")


def _run_targets(args: argparse.Namespace) -> List[RunResult]:
    limits = ReceiveLimits(args.max_input_pixels, args.max_output_pixels,
                           args.max_payload_bytes).validate()
    report = _progress(max(100, args.cases // 10))
    results = []
    if args.target in ('receiver', 'engine', 'all'):
        engine = make_engine(args.models) if args.target != 'receiver' else None
        every = args.engine_every or (1 if args.target == 'engine' else 8)
        fuzzer = fuzz.FrameFuzzer(args.seed, fuzz.make_seeds(), limits)
        name = 'receiver' if args.target == 'all' else args.target
        results.append(run_frames(name, args.seed, args.cases,
                                  FrameTarget(fuzzer, limits, engine, every), args.first,
                                  report))
    if args.target in ('controller', 'all'):
        results.append(run_controller(args.seed, args.cases, args.first, report))
    return results


def _replay_files(args: argparse.Namespace) -> int:
    engine = make_engine(args.models)
    failed = 0
    for path in args.replay:
        try:
            replay(path, engine)
            print(f'{path}: ok')
        except Exception as err:  # noqa: B902 - report and go on with the next file
            failed += 1
            print(f'{path}: {type(err).__name__}: {err}')
    return 1 if failed else 0


def main(argv: Optional[List[str]] = None) -> int:
    """Run the fuzz targets; 1 if anything crashed or memory grew past the bound."""
    args = parse_args(argv)
    if args.replay:
        return _replay_files(args)
    results = _run_targets(args)
    status = 0
    for result in results:
        _summary(result)
        if result.crashes:
            paths = write_crashes(args.crash_dir, result.crashes)
            print(f'  {len(paths)} crashing inputs written to {args.crash_dir}/')
            status = 1
        if result.rss_growth_mb > args.max_rss_growth_mb:
            print(f'  RSS grew {result.rss_growth_mb:.0f} MB > {args.max_rss_growth_mb} MB')
            status = 1
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"fuzz: {'FAILED' if status else 'ok'} (seed {args.seed}, peak RSS {peak:.0f} MB)")
    return status


if __name__ == '__main__':
    sys.exit(main())
