"""`cloudseg report FILE.mcap --out DIR`: a recorded run's summary plots, from the bag alone.

Reads `<ns>/edge_stats`, `<ns>/cloud_stats`, `<ns>/controller_state`, `<ns>/mask/compressed`
and `<ns>/image_lowres/compressed` of a bag written by `cloudseg record` (or `ros2 bag record`)
and draws what `cloudseg demo` shows live, with the same counting and drawing code: uplink
kbit/s, frames sent / analysed per second, end-to-end latency (recorder arrival minus the
acquisition stamp), probe agreement, the controller's estimate, bitrate and decisions over
time, and a strip of mask overlays. Writes DIR/report.png and DIR/summary.json. Two streaming
passes over the file: memory holds the per-second figures and the strip, not the images.
"""
import argparse
import json
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from cloudseg_ros.core.bag_source import bag_files, compressed_image_to_rgb, list_topics
from cloudseg_ros.core.mask_codec import decode_mask_png
from cloudseg_ros.core.palette import overlay_on
from cloudseg_ros.core.sources import SourceError
from cloudseg_ros.core.stream_figures import Second, count_cloud, count_edge
from cloudseg_ros.tools.demo_report import (draw_rates, draw_uplink, new_figure, save_figure,
                                            summarise)

STRIP = 6  # mask overlays in the strip


@dataclass
class BagRun:
    """What a recorded run holds, in the shape demo_report's summary and plots take."""

    namespace: str
    seconds: List[Second] = field(default_factory=list)
    frames: List[np.ndarray] = field(default_factory=list)  # the strip's overlays
    last_edge: object = None
    last_cloud: object = None
    decisions: List[tuple] = field(default_factory=list)  # (t_s, ControllerState)
    mask_stamps: List[int] = field(default_factory=list)


def find_namespace(topics: Dict[str, tuple], wanted: str) -> str:
    """The robot namespace whose stats the bag holds (`wanted`, or the only one)."""
    found = sorted({t[:-len('/edge_stats')] for t in topics if t.endswith('/edge_stats')}
                   | {t[:-len('/cloud_stats')] for t in topics if t.endswith('/cloud_stats')})
    if wanted:
        wanted = '/' + wanted.strip('/')
        if wanted not in found:
            raise SourceError(f"no stats of namespace '{wanted}' in the bag (found: "
                              f"{', '.join(found) or 'none'})")
        return wanted
    if len(found) != 1:
        raise SourceError(f"{'several' if found else 'no'} robot namespaces with edge_stats or "
                          f"cloud_stats in the bag ({', '.join(found) or 'none'}); "
                          f"choose one with --namespace")
    return found[0]


def _messages(path: str, topics: List[str]):
    """(topic, log time ns, decoded message) of `topics`, in log-time order, file by file."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory
    for file_path in bag_files(path):
        with open(file_path, 'rb') as f:
            reader = make_reader(f, decoder_factories=[DecoderFactory()])
            for _, channel, message, decoded in reader.iter_decoded_messages(topics=topics):
                yield channel.topic, message.log_time, decoded


def _second(run: BagRun, t_s: float) -> Second:
    """The Second holding time `t_s` (seconds since the first record), gaps filled empty."""
    index = max(int(math.floor(t_s)), 0)
    while len(run.seconds) <= index:
        run.seconds.append(Second(t_s=float(len(run.seconds))))
    return run.seconds[index]


def read_figures(path: str, namespace: str) -> BagRun:
    """First pass: per-second figures, controller decisions, the masks' stamps."""
    run = BagRun(namespace)
    ns = namespace
    t0 = None
    for topic, log_ns, msg in _messages(path, [f'{ns}/edge_stats', f'{ns}/cloud_stats',
                                               f'{ns}/controller_state',
                                               f'{ns}/mask/compressed']):
        t0 = log_ns if t0 is None else t0
        t_s = (log_ns - t0) * 1e-9
        if topic.endswith('/edge_stats'):
            count_edge(_second(run, t_s), msg)
            run.last_edge = msg
        elif topic.endswith('/cloud_stats'):
            if msg.stage == 'cloud' and count_cloud(_second(run, t_s), msg, log_ns * 1e-9):
                run.last_cloud = msg
        elif topic.endswith('/controller_state'):
            run.decisions.append((t_s, msg))
        else:
            run.mask_stamps.append(msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec)
    return run


def read_strip(path: str, run: BagRun, count: int = STRIP) -> None:
    """Second pass: overlays of `count` masks spread over the run (uplink image of the same
    stamp underneath when it was recorded)."""
    if not run.mask_stamps:
        return
    picks = {run.mask_stamps[int(i)] for i in np.linspace(0, len(run.mask_stamps) - 1,
                                                          min(count, len(run.mask_stamps)))}
    masks, images = {}, {}
    ns = run.namespace
    for topic, _, msg in _messages(path, [f'{ns}/mask/compressed',
                                          f'{ns}/image_lowres/compressed']):
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        if stamp not in picks:
            continue
        if topic.endswith('/mask/compressed'):
            masks[stamp] = decode_mask_png(msg.data)
        else:
            images[stamp] = compressed_image_to_rgb(msg.data)
    run.frames = [overlay_on(masks[s], images.get(s)) for s in sorted(masks)]


def draw_agreement(ax, seconds: List[Second]) -> None:
    """Probe agreement (mIoU of the pipeline's mask vs full resolution) over time."""
    points = [(s.t_s, np.mean(s.probe_agreement)) for s in seconds if s.probe_agreement]
    if points:
        ax.plot(*zip(*points), 'o-')
    ax.set_xlim(0, max(len(seconds) - 1, 1))
    ax.set_ylim(0, 1)
    ax.set_xlabel('time (s)')
    ax.set_title('probe agreement (mIoU)' if points else 'probe agreement: no probes recorded')


def draw_decisions(ax, decisions: List[tuple], duration_s: float) -> None:
    """Controller: estimated capacity and chosen bitrate, a marked line at each change."""
    if not decisions:
        ax.set_title('controller: no controller_state recorded')
        return
    t = [d[0] for d in decisions]
    # Steps: a state holds until the next one.
    ax.plot(t, [d[1].bandwidth_estimate_kbps for d in decisions], 'o-', drawstyle='steps-post',
            label='estimate kbit/s')
    ax.plot(t, [d[1].bitrate_kbps for d in decisions], 's-', drawstyle='steps-post',
            label='bitrate kbit/s')
    ax.set_xlim(0, max(duration_s, t[-1], 1.0))
    for t_s, state in decisions:
        if state.reason != 'hold':
            ax.axvline(t_s, color='grey', lw=0.8, ls=':')
            ax.annotate(state.target_config, (t_s, 0), xycoords=('data', 'axes fraction'),
                        rotation=90, fontsize=7, va='bottom')
    ax.legend(loc='upper left', fontsize=8)
    ax.set_xlabel('time (s)')
    ax.set_title('controller decisions')


def plot_report(run: BagRun, path: str) -> None:
    """report.png: four time plots over a strip of mask overlays."""
    fig, axes = new_figure(2, 4, (20, 8))
    draw_uplink(axes[0][0], run.seconds)
    draw_rates(axes[0][1], run.seconds)
    draw_agreement(axes[0][2], run.seconds)
    draw_decisions(axes[0][3], run.decisions, len(run.seconds) - 1)
    for ax in axes[1]:
        ax.remove()
    strip = fig.add_subplot(2, 1, 2)
    if run.frames:
        height = min(f.shape[0] for f in run.frames)
        strip.imshow(np.hstack([f[:height] for f in run.frames]))
    strip.set_title(f'{len(run.frames)} mask overlays across the run')
    strip.axis('off')
    save_figure(fig, path)


def write_bag_report(path: str, out_dir: str, namespace: str = '') -> Dict:
    """Write report.png and summary.json for the bag at `path`; return the summary."""
    if not os.path.exists(path):
        raise SourceError(f"'{path}' does not exist")
    topics = list_topics(bag_files(path))
    ns = find_namespace(topics, namespace)
    run = read_figures(path, ns)
    read_strip(path, run)
    os.makedirs(out_dir, exist_ok=True)
    plot_report(run, os.path.join(out_dir, 'report.png'))
    summary = summarise(run)
    changes = [d for d in run.decisions if d[1].reason != 'hold']
    summary.update(bag=path, namespace=ns, controller_states=len(run.decisions),
                   controller_changes=[{'t_s': round(t, 2), 'config': s.target_config,
                                        'reason': s.reason} for t, s in changes],
                   topics={t: n for t, (_, n) in sorted(topics.items())})
    with open(os.path.join(out_dir, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=1)
    summary['outputs'] = [os.path.join(out_dir, n) for n in ('report.png', 'summary.json')]
    return summary


def main(argv: Optional[List[str]] = None) -> int:
    """Draw the report; exit code 1 when the bag cannot be read or holds no stats."""
    parser = argparse.ArgumentParser(prog='cloudseg report', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('bag', help='MCAP file (or bag folder) written by cloudseg record, '
                        'demo --record or ros2 bag record')
    parser.add_argument('--out', required=True, help='folder for report.png and summary.json')
    parser.add_argument('--namespace', default='',
                        help="robot namespace ('' = the only one in the bag)")
    args = parser.parse_args(argv)
    try:
        summary = write_bag_report(args.bag, args.out, args.namespace)
    except SourceError as err:
        print(f'report: {err}', file=sys.stderr)
        return 1
    print(json.dumps({k: summary[k] for k in (
        'seconds', 'masks', 'sent_fps', 'analysed_fps', 'uplink_kbps', 'latency_ms_median',
        'probe_agreement_miou', 'controller_states', 'outputs')}, indent=1))
    return 0
