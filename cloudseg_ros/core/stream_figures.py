"""Per-second figures of a stream (frames sent / analysed, uplink bytes, latency, agreement).

One counting code for every consumer: the live monitor of `cloudseg demo` (reports as they
arrive), `cloudseg report` (reports read back from a bag, at their recorded arrival times) and
`cloudseg view`. Reports are PipelineStats messages or anything with the same fields (the
decoded messages of an MCAP reader), so nothing here needs rclpy.
"""
import math
from dataclasses import dataclass, field
from typing import List

import numpy as np


@dataclass
class Second:
    """Figures of one second of streaming."""

    t_s: float
    sent: int = 0
    analysed: int = 0
    uplink_bytes: int = 0
    latencies_ms: List[float] = field(default_factory=list)
    cloud_ms: List[float] = field(default_factory=list)
    probe_agreement: List[float] = field(default_factory=list)

    def line(self) -> str:
        """One human-readable progress line."""
        lat = np.array(self.latencies_ms) if self.latencies_ms else None
        lat_text = (f'{np.median(lat):6.0f} ms (max {lat.max():.0f})' if lat is not None
                    else '     - ms')
        cloud = f'{np.mean(self.cloud_ms):5.0f} ms' if self.cloud_ms else '    - ms'
        text = (f't={self.t_s:5.1f}s  sent {self.sent:3d} fps  analysed {self.analysed:3d} fps'
                f'  uplink {self.uplink_bytes * 8 / 1000:7.1f} kbit/s  e2e latency {lat_text}'
                f'  cloud {cloud}/frame')
        if self.probe_agreement:
            text += f'  probe agreement-mIoU {np.mean(self.probe_agreement):.3f}'
        return text


def second_at(seconds: List[Second], t_s: float) -> Second:
    """The Second of `seconds` that time `t_s` falls in, appending a new one when it is later."""
    if not seconds or t_s - seconds[-1].t_s >= 1.0:
        seconds.append(Second(t_s=math.floor(t_s)))
    return seconds[-1]


def count_edge(second: Second, msg) -> None:
    """Count one edge_stats report (a frame sent) into `second`."""
    second.sent += 1
    second.uplink_bytes += msg.frame_bytes


def count_cloud(second: Second, msg, now_s: float) -> bool:
    """Count one 'cloud' stats report received at `now_s`; True for a mask, False for a probe.

    End-to-end latency is `now_s` (when the report arrived) minus the acquisition stamp.
    """
    if not math.isnan(msg.probe_agreement_miou):
        second.probe_agreement.append(msg.probe_agreement_miou)
        return False
    second.analysed += 1
    second.cloud_ms.append(msg.total_ms)
    stamp_s = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
    second.latencies_ms.append((now_s - stamp_s) * 1e3)
    return True
