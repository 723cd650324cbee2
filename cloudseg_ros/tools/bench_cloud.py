"""`cloudseg bench-cloud`: speed of the cloud side (JPEG decode, SR, segmentation, engine).

Measures ms/frame and FPS at 480x360 from x2 and x4 LR frames (and x3 when its weights exist)
and at 2048x1024 from 512x256 (x4), for batch 1 and batch 8, on the chosen device, and checks
the H100 target (>= 250 FPS SR+seg at batch 8 at 2048x1024; batch-1 latency <= 8 ms). Stage
times come from the engine (CUDA events on the GPU); warm-up iterations are excluded. Speed does
not depend on the weights, so `--random-init` benchmarks untrained default-size networks when
models/ is empty.

On an H100 the target needs `--compile` (eager PyTorch spends most of CARN-M's time in separate
bias/ReLU/concat/pixel-shuffle kernels that the compiler fuses); `--cuda-graphs` on top removes
the launch gaps that dominate batch-1 latency.
"""
import argparse
import json
from pathlib import Path
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np
import torch

from cloudseg_ros.inference.engine import EngineConfig, EngineInput, SegEngine
from cloudseg_ros.nets.carn import carn_m
from cloudseg_ros.nets.checkpoint import CheckpointError, save_checkpoint
from cloudseg_ros.nets.icnet import ICNet, ICNetConfig

# name -> ((W, H) of the original frame, uplink scale)
CASES: Dict[str, Tuple[Tuple[int, int], int]] = {
    '480x360/x2': ((480, 360), 2),
    '480x360/x3': ((480, 360), 3),
    '480x360/x4': ((480, 360), 4),
    '2048x1024/x4': ((2048, 1024), 4),
}
TARGET_CASE = '2048x1024/x4'
TARGET_FPS = 250.0  # SR+seg frames per second at batch 8 (H100)
TARGET_LATENCY_MS = 8.0  # engine latency of one frame at batch 1 (H100)
SEG_FILE = 'seg_icnet.pt'
SR_FILES = {scale: f'sr_carnm_x{scale}.pt' for scale in (2, 3, 4)}
OPTIONAL_SR_SCALES = (3,)  # used when its file exists; its cases are skipped otherwise
JPEG_QUALITY = 90
DEFAULT_MODELS_DIR = Path(__file__).resolve().parents[2] / 'models'


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    """Command-line options of bench-cloud."""
    parser = argparse.ArgumentParser(prog='cloudseg bench-cloud',
                                     description=__doc__.split('\n')[0])
    parser.add_argument('--models', type=Path, default=DEFAULT_MODELS_DIR,
                        help=f'directory with {SEG_FILE}, {SR_FILES[2]}, {SR_FILES[4]} '
                             f'(and {SR_FILES[3]} for the x3 case)')
    parser.add_argument('--random-init', action='store_true',
                        help='benchmark untrained CARN-M + ICNet (default configs) instead')
    parser.add_argument('--device', default='auto', help="'auto', 'cpu', 'cuda', 'cuda:N'")
    parser.add_argument('--precision', default='auto', choices=['auto', 'bf16', 'fp16', 'fp32'])
    parser.add_argument('--iters', type=int, default=50, help='timed iterations per row')
    parser.add_argument('--warmup', type=int, default=5, help='untimed iterations per row')
    parser.add_argument('--batches', default='1,8', help='comma-separated batch sizes')
    parser.add_argument('--cases', default=','.join(CASES),
                        help=f'comma-separated subset of {", ".join(CASES)}')
    parser.add_argument('--cuda-graphs', action='store_true', help='replay captured CUDA graphs')
    parser.add_argument('--compile', action='store_true', help='torch.compile the networks')
    parser.add_argument('--no-channels-last', action='store_true', help='NCHW on CUDA')
    parser.add_argument('--no-pyramid-reuse', action='store_true',
                        help='segment without feeding the LR frame to ICNet (comparison)')
    parser.add_argument('--json', type=Path, help='also write the results here')
    args = parser.parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(',') if b]
    args.cases = [c for c in args.cases.split(',') if c]
    unknown = [c for c in args.cases if c not in CASES]
    if unknown or args.iters < 1 or not args.batches or min(args.batches) < 1:
        parser.error(f'bad --cases {unknown}, --iters or --batches')
    return args


def _save_random_models(root: Path) -> Tuple[Path, Dict[int, Path]]:
    """Untrained default-config ICNet and CARN-M x2/x3/x4 as checkpoints under root."""
    seg = save_checkpoint(root / SEG_FILE, ICNet(ICNetConfig()), 'icnet')
    srs = {s: save_checkpoint(root / name, carn_m(s), 'carn') for s, name in SR_FILES.items()}
    return seg, srs


def _make_engine(args: argparse.Namespace, seg: Path, srs: Dict[int, Path]) -> SegEngine:
    """Engine on the requested device; the bench does its own per-row warm-up."""
    return SegEngine(EngineConfig(
        seg_checkpoint=str(seg), sr_checkpoints={s: str(p) for s, p in srs.items()},
        device=args.device, precision=args.precision, pyramid_reuse=not args.no_pyramid_reuse,
        cuda_graphs=args.cuda_graphs, warmup=False, compile=args.compile,
        channels_last=not args.no_channels_last))


def _codec() -> Tuple[str, Callable[[np.ndarray], bytes], Callable[[bytes], np.ndarray]]:
    """(name, encode, decode): the project's codecs when present, else OpenCV."""
    try:
        from cloudseg_ros.core import codecs
        return 'core.codecs', (lambda rgb: codecs.encode_jpeg(rgb, JPEG_QUALITY)), \
            codecs.decode_jpeg
    except ImportError:
        def encode(rgb: np.ndarray) -> bytes:
            bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
            return cv2.imencode('.jpg', bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1].tobytes()

        def decode(data: bytes) -> np.ndarray:
            bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return 'cv2', encode, decode


def synthetic_frame(width: int, height: int) -> np.ndarray:
    """Draw a smooth street-like RGB image with edges.

    Its JPEG cost is close to a real frame's, unlike that of noise.
    """
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([128 + 100 * np.sin(x / 37.0), 128 + 90 * np.cos(y / 23.0),
                    128 + 80 * np.sin((x + y) / 51.0)], axis=-1)
    img[height // 2:, :, :] *= 0.6  # a horizon
    for i in range(0, width, max(8, width // 12)):  # poles
        img[:, i:i + max(2, width // 200), :] = 40
    noise = np.random.default_rng(0).normal(0, 6, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def _lr_frame(width: int, height: int, scale: int) -> np.ndarray:
    """Make the LR frame the robot would send, with the uplink's own downsampling."""
    hr = synthetic_frame(width, height)
    return cv2.resize(hr, (width // scale, height // scale), interpolation=cv2.INTER_AREA)


def _time_ms(fn: Callable[[], object], iters: int, warmup: int) -> List[float]:
    """Wall-clock ms of each timed call of fn (fn must synchronise the device itself)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def bench_row(engine: SegEngine, decode: Callable[[bytes], np.ndarray], payload: bytes,
              case: str, batch: int, args: argparse.Namespace) -> Dict[str, float]:
    """Median per-frame times of one (case, batch): decode, SR, seg, engine, end to end."""
    (width, height), scale = CASES[case]
    lr = decode(payload)
    decode_ms = statistics.median(_time_ms(lambda: decode(payload), args.iters, 2))
    inputs = [EngineInput(lr, scale, (width, height)) for _ in range(batch)]
    stages: Dict[str, List[float]] = {'sr': [], 'seg': []}

    def run() -> None:
        timings = engine.process(inputs)[0].timings_ms  # the group's times, shared by all
        for key in stages:
            stages[key].append(timings[key])

    latency = statistics.median(_time_ms(run, args.iters, args.warmup))
    sr, seg = (statistics.median(stages[k][args.warmup:]) / batch for k in ('sr', 'seg'))
    engine_ms = latency / batch
    return {'case': case, 'batch': batch, 'lr_size': f'{lr.shape[1]}x{lr.shape[0]}',
            'decode_ms': decode_ms, 'sr_ms': sr, 'seg_ms': seg, 'sr_seg_ms': sr + seg,
            'sr_seg_fps': 1e3 / (sr + seg), 'engine_ms': engine_ms, 'engine_fps': 1e3 / engine_ms,
            'latency_ms': latency, 'e2e_ms': decode_ms + engine_ms}


def print_table(rows: List[Dict[str, float]]) -> None:
    """One line per (case, batch); ms are per frame, latency is the whole batch's."""
    header = (f'{"case":<13} {"LR":>8} {"batch":>5} {"decode":>7} {"SR":>8} {"seg":>8} '
              f'{"SR+seg":>8} {"FPS":>7} {"engine":>8} {"FPS":>7} {"latency":>8}')
    print(header + '\n' + '-' * len(header))
    for r in rows:
        print(f'{r["case"]:<13} {r["lr_size"]:>8} {r["batch"]:>5} {r["decode_ms"]:7.2f} '
              f'{r["sr_ms"]:8.2f} {r["seg_ms"]:8.2f} {r["sr_seg_ms"]:8.2f} '
              f'{r["sr_seg_fps"]:7.1f} {r["engine_ms"]:8.2f} {r["engine_fps"]:7.1f} '
              f'{r["latency_ms"]:8.2f}')
    print('ms per frame (decode: one LR JPEG on the CPU; engine: upload + SR + seg + download); '
          'latency: ms per batch')


def check_targets(rows: List[Dict[str, float]], device_name: str) -> Dict[str, object]:
    """Compare the 2048x1024 rows with the H100 targets; print and return the verdict."""
    fps = [r['sr_seg_fps'] for r in rows if r['case'] == TARGET_CASE and r['batch'] == 8]
    lat = [r['latency_ms'] for r in rows if r['case'] == TARGET_CASE and r['batch'] == 1]
    result: Dict[str, object] = {'fps_b8': fps[0] if fps else None,
                                 'latency_b1_ms': lat[0] if lat else None}
    result['met'] = bool(fps and lat and fps[0] >= TARGET_FPS and lat[0] <= TARGET_LATENCY_MS)
    if not (fps and lat):
        print(f'H100 target not checked: needs {TARGET_CASE} at batch 1 and 8')
        return result
    verdict = 'MET' if result['met'] else 'NOT met'
    print(f'H100 target {verdict}: SR+seg {TARGET_CASE} batch 8 = {fps[0]:.0f} FPS '
          f'(>= {TARGET_FPS:.0f}), batch-1 latency = {lat[0]:.2f} ms (<= {TARGET_LATENCY_MS:.0f})')
    if 'H100' not in device_name:
        print(f'(the target is defined for an H100; this run is on {device_name})')
    elif not result['met']:
        print('(eager PyTorch is not expected to meet it: try --compile --cuda-graphs)')
    return result


def _model_files(args: argparse.Namespace, tmp: Path) -> Tuple[Path, Dict[int, Path]]:
    """Checkpoints to benchmark: models/ files, or fresh random ones with --random-init."""
    if args.random_init:
        print('--random-init: untrained CARN-M x2/x3/x4 and ICNet with default configs '
              '(speed does not depend on the weights)', flush=True)
        return _save_random_models(tmp)
    seg, srs = args.models / SEG_FILE, {s: args.models / n for s, n in SR_FILES.items()}
    srs = {s: p for s, p in srs.items() if s not in OPTIONAL_SR_SCALES or p.is_file()}
    missing = [str(p) for p in [seg, *srs.values()] if not p.is_file()]
    if missing:
        raise CheckpointError(f'missing {", ".join(missing)}; pass --models DIR, or '
                              f'--random-init to time untrained networks of the same size')
    return seg, srs


def _device_name(engine: SegEngine) -> str:
    if engine.device.type == 'cuda':
        return torch.cuda.get_device_name(engine.device)
    return f'CPU ({torch.get_num_threads()} threads)'


def main(argv: Optional[List[str]] = None) -> int:
    """Run the benchmark; 0 on success, 2 when the models cannot be loaded."""
    args = parse_args(argv)
    codec_name, encode, decode = _codec()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            engine = _make_engine(args, *_model_files(args, Path(tmp)))
    except (CheckpointError, ValueError) as exc:
        print(f'bench-cloud: {exc}', file=sys.stderr)
        return 2
    device_name = _device_name(engine)
    supported = engine.supported_scales()
    skipped = [c for c in args.cases if CASES[c][1] not in supported]
    if skipped:
        print(f'note: no SR weights for {", ".join(skipped)}: left out', flush=True)
    args.cases = [c for c in args.cases if c not in skipped]
    print(f'device: {device_name}, precision: {str(engine.dtype).replace("torch.", "")}, '
          f'JPEG: {codec_name}, cuda_graphs: {args.cuda_graphs}, compile: {args.compile}, '
          f'pyramid_reuse: {not args.no_pyramid_reuse}, iters: {args.iters}', flush=True)
    rows = []
    for i, (case, batch) in enumerate((c, b) for c in args.cases for b in args.batches):
        (width, height), scale = CASES[case]
        payload = encode(_lr_frame(width, height, scale))
        start = time.perf_counter()
        rows.append(bench_row(engine, decode, payload, case, batch, args))
        print(f'[{i + 1}/{len(args.cases) * len(args.batches)}] {case} batch {batch}: '
              f'{rows[-1]["engine_fps"]:.1f} FPS ({time.perf_counter() - start:.1f} s)',
              flush=True)
    print_table(rows)
    targets = check_targets(rows, device_name)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(
            {'device': device_name, 'precision': str(engine.dtype), 'torch': torch.__version__,
             'random_init': args.random_init, 'cuda_graphs': args.cuda_graphs,
             'compile': args.compile, 'jpeg': codec_name, 'rows': rows, 'targets': targets},
            indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
