"""Records what one robot's stream does, second by second, as JSON lines (for `cloudseg wan-test`).

Runs as its own process inside the robot's network namespace, where a robot-side observer would
be, and subscribes (relative to --namespace):

- `edge_stats`: every frame the robot sent (bytes -> sent kbit/s),
- `cloud_stats`, stage 'cloud_rx': every frame that arrived at the cloud (delivered kbit/s),
- `mask/compressed`: masks back at the robot; end-to-end latency = now - acquisition stamp
  (one host, one clock),
- `controller_state`: the controller's estimate and chosen profile entry.

Each finished wall-clock second becomes one line of --out: ``{"t": <unix second>, "sent_bytes",
"sent_frames", "rx_bytes", "rx_frames", "masks", "latency_ms": [...], "config", "estimate_kbps",
"switches": [{"t", "config", "reason"}]}``. Lines are flushed as they are written so the
orchestrator can follow the file live.

With --trace, every event is also written as one JSON list (unix time first), the input the
controller saw, so a run can be replayed through core/uplink.py (test/unit/test_wan_traces.py):
``[t, "sent", seq, bytes]``, ``[t, "rx", seq, bytes, stamp_s, arrival_s]``,
``[t, "cloud", stamp_ns, queue_ms, inference_ms]``, ``[t, "mask", stamp_ns]`` and
``[t, "state", config, estimate_kbps, link_latency_ms]`` (on a change of entry only).
"""
import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage

from cloudseg_ros.msg import ControllerState, PipelineStats
from cloudseg_ros.ros import qos
from cloudseg_ros.ros.conversions import stamp_to_s


@dataclass
class SecondRecord:
    """What happened during one wall-clock second (unix time `t` to `t + 1`)."""

    t: int
    sent_bytes: int = 0
    sent_frames: int = 0
    rx_bytes: int = 0
    rx_frames: int = 0
    masks: int = 0
    latency_ms: List[float] = field(default_factory=list)
    config: str = ''
    estimate_kbps: float = math.nan
    switches: List[Dict] = field(default_factory=list)


class WanMonitor(Node):
    """Bins the stream's events into SecondRecords and writes each finished one."""

    def __init__(self, namespace: str, out_path: str, trace_path: str = '') -> None:
        super().__init__('wan_monitor', namespace=namespace)
        self._out = open(out_path, 'w')
        self._trace = open(trace_path, 'w') if trace_path else None
        self._seconds: Dict[int, SecondRecord] = {}
        self._config = ''
        self._estimate = math.nan
        self.create_subscription(PipelineStats, 'edge_stats', self._on_edge, qos.STATS)
        self.create_subscription(PipelineStats, 'cloud_stats', self._on_cloud, qos.STATS)
        self.create_subscription(CompressedImage, 'mask/compressed', self._on_mask, qos.IMAGE)
        self.create_subscription(ControllerState, 'controller_state', self._on_state,
                                 qos.STATUS)
        self.create_timer(0.25, self._flush)

    def _second(self, now_s: float) -> SecondRecord:
        t = int(now_s)
        if t not in self._seconds:
            self._seconds[t] = SecondRecord(t, config=self._config,
                                            estimate_kbps=self._estimate)
        return self._seconds[t]

    def _event(self, now_s: float, *fields) -> None:
        if self._trace is not None:
            self._trace.write(json.dumps([round(now_s, 4), *fields]) + '\n')

    def _on_edge(self, msg: PipelineStats) -> None:
        now_s = time.time()
        self._event(now_s, 'sent', msg.seq, msg.frame_bytes)
        record = self._second(now_s)
        record.sent_bytes += msg.frame_bytes
        record.sent_frames += 1

    def _on_cloud(self, msg: PipelineStats) -> None:
        now_s = time.time()
        stamp = msg.header.stamp
        if msg.stage == 'cloud' and math.isnan(msg.probe_agreement_miou):
            self._event(now_s, 'cloud', stamp.sec * 1_000_000_000 + stamp.nanosec,
                        round(msg.queue_ms, 1), round(msg.inference_ms, 1))
        if msg.stage != 'cloud_rx':
            return  # 'cloud' records repeat the same frames after inference
        self._event(now_s, 'rx', msg.seq, msg.frame_bytes, round(stamp_to_s(stamp), 4),
                    round(stamp_to_s(msg.arrival_stamp), 4))
        record = self._second(now_s)
        record.rx_bytes += msg.frame_bytes
        record.rx_frames += 1

    def _on_mask(self, msg: CompressedImage) -> None:
        now_s = time.time()
        stamp = msg.header.stamp
        self._event(now_s, 'mask', stamp.sec * 1_000_000_000 + stamp.nanosec)
        record = self._second(now_s)
        record.masks += 1
        record.latency_ms.append(round((now_s - stamp_to_s(msg.header.stamp)) * 1e3, 1))

    def _on_state(self, msg: ControllerState) -> None:
        now_s = time.time()
        record = self._second(now_s)
        # The decision (target_config), not the edge's read-back config_name, which follows
        # it one parameter round trip later.
        if msg.target_config != self._config:
            self._event(now_s, 'state', msg.target_config,
                        round(float(msg.bandwidth_estimate_kbps), 1),
                        round(float(msg.link_latency_ms), 1))
            record.switches.append({'t': round(now_s, 3), 'config': msg.target_config,
                                    'reason': msg.reason})
        self._config = msg.target_config
        self._estimate = float(msg.bandwidth_estimate_kbps)
        record.config = self._config
        record.estimate_kbps = self._estimate

    def _flush(self, final: bool = False) -> None:
        """Write every second that has ended (all of them when `final`)."""
        now = int(time.time())
        for t in sorted(self._seconds):
            if t >= now and not final:
                break
            record = self._seconds.pop(t)
            estimate = record.estimate_kbps
            line = asdict(record)
            line['estimate_kbps'] = None if math.isnan(estimate) else round(estimate, 1)
            self._out.write(json.dumps(line) + '\n')
        self._out.flush()
        if self._trace is not None:
            self._trace.flush()

    def close(self) -> None:
        """Write what is left and close the file."""
        self._flush(final=True)
        self._out.close()
        if self._trace is not None:
            self._trace.close()


def main(argv: Optional[List[str]] = None) -> int:
    """Record until SIGINT, then write the last seconds."""
    parser = argparse.ArgumentParser(prog='wan_monitor', description=__doc__.split('\n')[0])
    parser.add_argument('--namespace', default='/robot1')
    parser.add_argument('--out', required=True, help='JSON-lines file to write')
    parser.add_argument('--trace', default='', help='also write every event to this file')
    args, _ros_args = parser.parse_known_args(argv)
    rclpy.init()
    monitor = WanMonitor(args.namespace, args.out, args.trace)
    try:
        rclpy.spin(monitor)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        monitor.close()
        monitor.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
