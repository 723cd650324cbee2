"""Summary of a streaming run: overlay video, a PNG of rates and latency, JSON figures.

A run is anything with `seconds` (core/stream_figures.Second), `frames` (overlays),
`last_edge` and `last_cloud` (the last stats reports): the live StreamMonitor of `cloudseg demo`
or a recorded run read back by `cloudseg report`; no rclpy here.
"""
import os
from typing import Dict

import av
import numpy as np


def write_video(frames, path: str, fps: float) -> None:
    """H.264 MP4 of the overlay frames (all must share one size; others are skipped)."""
    if not frames:
        return
    height, width = frames[0].shape[:2]
    with av.open(path, 'w') as container:
        stream = container.add_stream('libx264', rate=int(round(fps)))
        stream.width, stream.height = width - width % 2, height - height % 2
        stream.pix_fmt = 'yuv420p'
        for rgb in frames:
            if rgb.shape[:2] != (height, width):
                continue
            frame = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(rgb[:stream.height, :stream.width]), format='rgb24')
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def summarise(monitor) -> Dict:
    """Whole-run figures (the first second is start-up and not counted in rates)."""
    seconds = monitor.seconds[1:-1] or monitor.seconds
    latencies = [v for s in monitor.seconds for v in s.latencies_ms]
    agreements = [v for s in monitor.seconds for v in s.probe_agreement]
    edge, cloud = monitor.last_edge, monitor.last_cloud
    return {
        'seconds': len(monitor.seconds),
        'masks': sum(s.analysed for s in monitor.seconds),
        'sent_fps': float(np.mean([s.sent for s in seconds])) if seconds else 0.0,
        'analysed_fps': float(np.mean([s.analysed for s in seconds])) if seconds else 0.0,
        'uplink_kbps': float(np.mean([s.uplink_bytes * 8e-3 for s in seconds]))
        if seconds else 0.0,
        'latency_ms_median': float(np.median(latencies)) if latencies else None,
        'latency_ms_p95': float(np.percentile(latencies, 95)) if latencies else None,
        'probe_agreement_miou': float(np.mean(agreements)) if agreements else None,
        'edge_frames': None if edge is None else {
            'in': edge.frames_in, 'key': edge.frames_key, 'useful': edge.frames_useful,
            'forced': edge.frames_forced, 'skipped': edge.frames_skipped,
            'rejected': edge.frames_rejected},
        'cloud_frames': None if cloud is None else {
            'in': cloud.frames_in, 'superseded': cloud.frames_skipped,
            'rejected': cloud.frames_rejected, 'lost': cloud.frames_lost},
    }


def draw_uplink(ax, seconds) -> None:
    """Uplink kbit/s per second."""
    ax.plot([s.t_s for s in seconds], [s.uplink_bytes * 8e-3 for s in seconds],
            label='uplink kbit/s')
    ax.set_xlabel('time (s)')
    ax.set_title('uplink kbit/s')


def draw_rates(ax, seconds) -> None:
    """Frames sent and analysed per second, and median end-to-end latency on a twin axis."""
    t = [s.t_s for s in seconds]
    ax.plot(t, [s.sent for s in seconds], label='sent fps')
    ax.plot(t, [s.analysed for s in seconds], label='analysed fps')
    lat = [np.median(s.latencies_ms) if s.latencies_ms else np.nan for s in seconds]
    twin = ax.twinx()
    twin.plot(t, lat, 'r--', label='e2e latency ms')
    twin.set_ylabel('latency (ms)')
    ax.legend(loc='upper left')
    ax.set_title('frames/s and end-to-end latency')
    ax.set_xlabel('time (s)')


def new_figure(rows: int, cols: int, size: tuple):
    """A matplotlib figure for files (Agg: no display needed) and its axes."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt.subplots(rows, cols, figsize=size, squeeze=False)


def save_figure(fig, path: str) -> None:
    """Write the figure as PNG and free it."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_summary(monitor, path: str) -> None:
    """Uplink rate, analysed rate, latency over time, and the last overlay frame."""
    fig, axes = new_figure(1, 3, (15, 4))
    axes = axes[0]
    draw_uplink(axes[0], monitor.seconds)
    draw_rates(axes[1], monitor.seconds)
    if monitor.frames:
        axes[2].imshow(monitor.frames[-1])
    axes[2].set_title('last mask overlay')
    axes[2].axis('off')
    save_figure(fig, path)


def write_report(monitor, out_dir: str, fps: float) -> Dict:
    """Write overlay.mp4, summary.png and summary.json; return the summary."""
    import json
    summary = summarise(monitor)
    write_video(monitor.frames, os.path.join(out_dir, 'overlay.mp4'), fps)
    plot_summary(monitor, os.path.join(out_dir, 'summary.png'))
    with open(os.path.join(out_dir, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=1)
    summary['outputs'] = [os.path.join(out_dir, n)
                          for n in ('overlay.mp4', 'summary.png', 'summary.json')]
    return summary
