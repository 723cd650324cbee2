"""`cloudseg profile`: measure a grid of uplink configurations on a clip, keep the Pareto front.

Every configuration of the grid (scales x codecs x qualities x frame-rate caps x selector
thresholds, see `core.profile.config_grid`) is streamed through the real robot pipeline and the
cloud engine (`tools.stream_eval`); its bitrate and agreement-mIoU (vs full-resolution inference)
become a profile entry. The YAML (`core.profile.save_profile`) holds all entries, the front the
controller chooses from, and meta naming the clip and the weights. `--plot` draws kbps vs
accuracy: every configuration in grey, the front highlighted.

    cloudseg profile --input ../shared/data/camvid11/val --out config/profile.yaml \\
        --plot docs/profile.png --scales 1 2 3 4 --codecs jpeg h264 --qualities 30 50 70 90 \\
        --crfs 18 23 28 33 38 --rates 15 7.5 --thresholds 0 0.1

A scale without SR weights for the chosen variant is left out with a note. H.264 points are
streamed like on the robot (one IDR, then P-frames from the frames sent), so their rate and
selector variants decode to new pixels and cost inference of their own, unlike JPEG's.
"""
import argparse
import math
import os
from typing import List, Optional, Sequence

from cloudseg_ros.core.profile import (DEFAULT_KEY_THRESHOLD, ProfileEntry, config_grid,
                                       pareto_front, save_profile)
from cloudseg_ros.tools.stream_eval import (CloudVariant, StreamInputError, StreamResult,
                                            add_codec_args, add_common_args,
                                            check_selector_settings, clip_meta, codec_settings,
                                            evaluator_from_args, models_meta, usable_scales)

MAX_PLOT_LABELS = 8  # front points named on the plot
CODEC_MARKERS = {'jpeg': 'o', 'h264': '^'}

# Reported by `cloudseg` in one line with exit code 2: bad input, not a bug.
USER_ERRORS = (StreamInputError,)


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    """Command-line options of `cloudseg profile`."""
    parser = argparse.ArgumentParser(prog='cloudseg profile', description=__doc__.split('\n')[0])
    add_common_args(parser)
    parser.add_argument('--out', default='config/profile.yaml', help='profile YAML to write')
    parser.add_argument('--plot', default=None, help='also draw kbps vs accuracy to this PNG')
    parser.add_argument('--scales', type=int, nargs='+', default=[1, 2, 3, 4],
                        choices=[1, 2, 3, 4],
                        help='downsampling factors (those without SR weights are left out)')
    add_codec_args(parser, qualities=[30, 50, 70, 90], crfs=[18, 23, 28, 33, 38])
    parser.add_argument('--rates', type=float, nargs='+', default=[15.0, 7.5],
                        help='frame-rate caps in Hz')
    # 0.1 skips about half of CamVid's 15 fps frames; 0.05 would skip none (see bench-stream).
    parser.add_argument('--thresholds', type=float, nargs='+', default=[0.0, 0.1],
                        help='selector useful thresholds (0: send every frame the rate allows)')
    parser.add_argument('--key-threshold', type=float, default=DEFAULT_KEY_THRESHOLD)
    parser.add_argument('--sr-variant', default='aware', choices=['aware', 'base', 'bilinear'])
    parser.add_argument('--no-pyramid-reuse', action='store_true',
                        help='segment without feeding the LR frame to ICNet')
    args = parser.parse_args(argv)
    try:
        args.codec_settings = codec_settings(args.codecs, args.qualities, args.crfs)
        check_selector_settings(args.thresholds, args.key_threshold, args.rates)
    except ValueError as err:
        parser.error(str(err))
    return args


def print_front(front: Sequence[ProfileEntry], results: Sequence[StreamResult]) -> None:
    """Table of the Pareto front, cheapest first."""
    sent = {r.config.name: r.frames_sent for r in results}
    frames = results[0].frames if results else 0
    print(f'\nPareto front ({len(front)} of {len(results)} configurations):')
    print(f'{"configuration":<34} {"kbps":>9} {"agreement":>9} {"labeled":>8} {"sent":>8}')
    for entry in front:
        labeled = '-' if entry.labeled_miou is None else f'{entry.labeled_miou:.4f}'
        sent_text = f'{sent[entry.name]}/{frames}'
        print(f'{entry.name:<34} {entry.kbps:9.1f} {entry.accuracy:9.4f} {labeled:>8} '
              f'{sent_text:>8}')


def plot_profile(entries: Sequence[ProfileEntry], front: Sequence[ProfileEntry], path: str,
                 title: str) -> None:
    """kbps (log) vs agreement-mIoU: every configuration grey (marker by codec), the front red."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5))
    for codec, marker in CODEC_MARKERS.items():
        chosen = [e for e in entries if e.config.codec == codec]
        if chosen:
            ax.scatter([e.kbps for e in chosen], [e.accuracy for e in chosen], s=18,
                       color='0.7', marker=marker, label=f'configuration ({codec})')
    ax.plot([e.kbps for e in front], [e.accuracy for e in front], '-o', color='tab:red',
            markersize=5, label='Pareto front')
    # Name a handful of front points, spread along it: all of them would overprint.
    step = max(1, math.ceil(len(front) / MAX_PLOT_LABELS))
    for entry in list(front[::step]) + ([front[-1]] if (len(front) - 1) % step else []):
        ax.annotate(entry.name, (entry.kbps, entry.accuracy), fontsize=6,
                    xytext=(4, -10), textcoords='offset points')
    ax.set_xscale('log')
    ax.set_xlabel('uplink bitrate (kbit/s)')
    ax.set_ylabel('agreement-mIoU vs full-resolution inference')
    ax.set_title(title, fontsize=10)
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(loc='lower right')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> int:
    """Evaluate the grid, write the profile (and plot); 0 on success."""
    args = parse_args(argv)
    evaluator = evaluator_from_args(args)
    variant = CloudVariant(args.sr_variant, not args.no_pyramid_reuse)
    scales = usable_scales(evaluator, variant, args.scales)
    configs = config_grid(scales, list(args.codec_settings), args.codec_settings, args.rates,
                          args.thresholds, key_threshold=args.key_threshold)
    print(f'{len(configs)} configurations (scales {scales}, {" + ".join(args.codec_settings)}), '
          f'cloud {variant.name}', flush=True)
    results = evaluator.run_many([(config, variant) for config in configs])
    entries = [result.profile_entry() for result in results]
    front = pareto_front(entries)
    meta = clip_meta(args, evaluator)
    meta.update({'tool': 'cloudseg profile', 'sr_variant': variant.sr,
                 'pyramid_reuse': variant.pyramid_reuse,
                 'models': models_meta(evaluator)})
    save_profile(args.out, entries, front, meta)
    print_front(front, results)
    print(f'wrote {args.out}', flush=True)
    if args.plot:
        plot_profile(entries, front, args.plot,
                     f'{os.path.basename(meta["clip"])} ({meta["frames"]} frames), '
                     f'cloud {variant.name}')
        print(f'wrote {args.plot}', flush=True)
    return 0
