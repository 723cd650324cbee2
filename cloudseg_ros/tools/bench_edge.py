"""`cloudseg bench-edge`: per-frame CPU cost of the robot side (select + downsample + encode).

Every frame is selected, downsampled and encoded, as if the selector sent all of them: that is
the worst case the robot must sustain (a static scene costs only the selector). Runs on one
core (OpenCV and x264 single-threaded) so the numbers hold on a small robot computer. Inputs
are real CamVid val frames (a continuous 15 fps clip) at 480x360 and the same frames upscaled
to 2048x1024 (the paper's Cityscapes size), or synthetic moving texture if the data is missing.
Never imports torch.
"""
import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from cloudseg_ros.core.codecs import EDGE_DEFAULT_X264_PRESET, EDGE_X264_PRESETS, FrameEncoder
from cloudseg_ros.core.imageops import downsample
from cloudseg_ros.core.selector import FrameKind, FrameSelector

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO_ROOT.parent / 'shared' / 'data' / 'camvid11'
RESOLUTIONS = ((480, 360), (2048, 1024))
CODEC_SETTINGS = (('jpeg', 'q80'), ('h264', 'crf28'))
SCALES = (1, 2, 3, 4)
TARGET_MS = 5.0  # budget per frame at 480x360 on one core
TARGET_SIZE = (480, 360)
FPS = 15.0


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog='cloudseg bench-edge',
                                     description=__doc__.split('\n')[0])
    parser.add_argument('--data', type=Path, default=DEFAULT_DATA,
                        help='camvid11 directory (val/images used); synthetic frames if missing')
    parser.add_argument('--frames', type=int, default=60,
                        help='frames per configuration (default 60)')
    parser.add_argument('--json', type=Path, default=None, help='also write the rows as JSON')
    parser.add_argument('--h264-preset', default=EDGE_DEFAULT_X264_PRESET,
                        choices=list(EDGE_X264_PRESETS),
                        help=f"the edge's x264 preset (default {EDGE_DEFAULT_X264_PRESET})")
    args = parser.parse_args(list(argv))
    if args.frames < 2:
        parser.error('--frames must be >= 2')
    return args


def load_clip(data_dir: Path, count: int) -> Tuple[List[np.ndarray], str]:
    """Return `count` consecutive RGB frames (looping the clip if short) and their source."""
    paths = sorted((data_dir / 'val' / 'images').glob('*.jpg'))
    if not paths:
        return synthetic_clip(count, TARGET_SIZE), 'synthetic'
    frames = []
    for path in paths[:count]:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise RuntimeError(f'cannot read {path}')
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    while len(frames) < count:  # ping-pong keeps motion continuous across the loop
        frames.extend(frames[-2::-1][:count - len(frames)])
    return frames, f'CamVid val ({data_dir})'


def synthetic_clip(count: int, size_wh: Tuple[int, int]) -> List[np.ndarray]:
    """Smooth random texture panning 3 px per frame (compressible like a real scene)."""
    width, height = size_wh
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (height // 8, (width + 3 * count) // 8 + 1, 3), np.uint8)
    canvas = cv2.resize(coarse, (coarse.shape[1] * 8, coarse.shape[0] * 8),
                        interpolation=cv2.INTER_CUBIC)
    return [np.ascontiguousarray(canvas[:height, 3 * i:3 * i + width]) for i in range(count)]


def bench_config(frames: List[np.ndarray], codec: str, scale: int,
                 h264_preset: str = EDGE_DEFAULT_X264_PRESET) -> Dict[str, float]:
    """Time select + downsample + encode on every frame; return per-frame statistics."""
    selector = FrameSelector()
    encoder = FrameEncoder(codec=codec, jpeg_quality=80, h264_crf=28, h264_preset=h264_preset,
                           h264_threads=1)
    totals, select_ms, sizes = [], [], []
    for index, rgb in enumerate(frames):
        start = time.perf_counter()
        decision = selector.decide(rgb, index / FPS)
        selected = time.perf_counter()
        small = downsample(rgb, scale)
        encoded = encoder.encode(small, force_keyframe=decision.kind == FrameKind.KEY)
        end = time.perf_counter()
        totals.append((end - start) * 1e3)
        select_ms.append((selected - start) * 1e3)
        sizes.append(len(encoded.data))
    totals_arr = np.asarray(totals)
    return {'ms_mean': float(totals_arr.mean()), 'ms_p95': float(np.percentile(totals_arr, 95)),
            'bytes_mean': float(np.mean(sizes)), 'select_ms_mean': float(np.mean(select_ms))}


def run_all(clip: List[np.ndarray],
            h264_preset: str = EDGE_DEFAULT_X264_PRESET) -> List[Dict[str, object]]:
    """Benchmark every resolution x codec x scale; print one table row as each finishes."""
    rows = []
    print(f'{"resolution":>10} {"codec":>10} {"scale":>5} {"ms mean":>8} {"ms p95":>8} '
          f'{"bytes/frame":>11} {"select ms":>9}  target', flush=True)
    for width, height in RESOLUTIONS:
        frames = clip if (width, height) == TARGET_SIZE else [
            cv2.resize(f, (width, height), interpolation=cv2.INTER_CUBIC) for f in clip]
        for (codec, setting), scale in ((c, s) for c in CODEC_SETTINGS for s in SCALES):
            stats = bench_config(frames, codec, scale, h264_preset)
            verdict = '-'
            if (width, height) == TARGET_SIZE:
                verdict = 'PASS' if stats['ms_mean'] <= TARGET_MS else 'MISS'
            row = {'resolution': f'{width}x{height}', 'codec': f'{codec} {setting}',
                   'scale': scale, **stats, 'target': verdict}
            rows.append(row)
            print(f'{row["resolution"]:>10} {row["codec"]:>10} {scale:>5} '
                  f'{stats["ms_mean"]:8.2f} {stats["ms_p95"]:8.2f} {stats["bytes_mean"]:11.0f} '
                  f'{stats["select_ms_mean"]:9.2f}  {verdict}', flush=True)
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the benchmark; return 0 (a MISS is reported, not an error)."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    cv2.setNumThreads(1)  # honest single-core numbers: OpenCV would otherwise use every core
    clip, source = load_clip(args.data, args.frames)
    print(f'bench-edge: {len(clip)} frames per configuration from {source}; every frame '
          f'selected + downsampled (INTER_AREA) + encoded, 1 thread', flush=True)
    print(f'bench-edge: x264 preset {args.h264_preset}', flush=True)
    rows = run_all(clip, args.h264_preset)
    target_rows = [r for r in rows if r['target'] != '-']
    misses = [f'{r["codec"]} x{r["scale"]}' for r in target_rows if r['target'] == 'MISS']
    print(f'target: <= {TARGET_MS:.0f} ms/frame (mean) at {TARGET_SIZE[0]}x{TARGET_SIZE[1]} on '
          f'one core: ' + ('PASS (all configurations)' if not misses
                           else f'MISS for {", ".join(misses)}'), flush=True)
    if args.json is not None:
        payload = {'source': source, 'frames': len(clip), 'target_ms': TARGET_MS,
                   'h264_preset': args.h264_preset, 'rows': rows}
        args.json.write_text(json.dumps(payload, indent=2) + '\n')
        print(f'wrote {args.json}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
