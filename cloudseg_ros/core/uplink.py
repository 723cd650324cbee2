"""The controller logic without ROS: estimator, sent-vs-arrived tracker, latency split, policy.

The controller node converts messages and calls this; tests replay recorded wan-test traces
through the same object. Every time here is the robot's clock (seconds) except the cloud's
arrival stamps, which only the estimator's delay gradient uses (as differences).

Latency split. The end-to-end latency of a mask (acquisition -> mask back at the robot) contains
the time the frame spent at the cloud: decoding, waiting for the engine, inference, publishing.
The cloud reports that time per frame ('cloud' stats: `queue_ms` + `inference_ms`), so the rest
is what the link (and the robot's own encoding) caused. The latency guard acts on that rest:
under CPU load, inference of 800 ms on an idle link read as congestion and stepped the stream
down for nothing (issue 12); a lower bitrate does not make inference faster.
"""
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

from cloudseg_ros.core.bandwidth import BandwidthEstimator, BandwidthEstimatorConfig
from cloudseg_ros.core.delivery import DeliveryTracker
from cloudseg_ros.core.policy import Decision, Policy, PolicyConfig
from cloudseg_ros.core.profile import ProfileEntry

PENDING_FRAMES = 64  # masks or cloud reports waiting for their other half (a few seconds)
# A sent sequence number this far below the last one means the edge restarted (seq from 1).
SEQ_RESTART_DROP = 30


class LatencySplit:
    """Pairs masks (end-to-end latency) with the cloud's timing of the same frame, by stamp."""

    def __init__(self) -> None:
        self._masks: 'OrderedDict[int, float]' = OrderedDict()  # stamp_ns -> e2e ms
        self._cloud: 'OrderedDict[int, float]' = OrderedDict()  # stamp_ns -> ms at the cloud

    def on_mask(self, stamp_ns: int, end_to_end_ms: float) -> Optional[float]:
        """Record a mask; return its link latency in ms if the cloud's report came first."""
        return self._pair(stamp_ns, end_to_end_ms, self._cloud, self._masks, first_is_e2e=True)

    def on_cloud(self, stamp_ns: int, at_cloud_ms: float) -> Optional[float]:
        """Record the cloud's time for a frame; return its link latency if the mask came first."""
        return self._pair(stamp_ns, at_cloud_ms, self._masks, self._cloud, first_is_e2e=False)

    @staticmethod
    def _pair(stamp_ns, value, other: OrderedDict, mine: OrderedDict,
              first_is_e2e: bool) -> Optional[float]:
        if stamp_ns in other:
            partner = other.pop(stamp_ns)
            e2e, at_cloud = (value, partner) if first_is_e2e else (partner, value)
            return max(0.0, e2e - at_cloud)
        mine[stamp_ns] = value
        while len(mine) > PENDING_FRAMES:
            mine.popitem(last=False)
        return None


@dataclass
class UplinkState:
    """What one update decided and measured."""

    decision: Decision
    estimate_kbps: float
    link_latency_ms: Optional[float]  # newest link latency sample used, None if none


class UplinkController:
    """Feeds the estimator, tracker and policy from the robot's and the cloud's reports."""

    def __init__(self, front, policy: Optional[PolicyConfig] = None,
                 estimator: Optional[BandwidthEstimatorConfig] = None) -> None:
        """`front`: profile entries to choose from (see :class:`Policy`)."""
        self.estimator = BandwidthEstimator(estimator)
        self.delivery = DeliveryTracker()
        self.policy = Policy(list(front), policy)
        self.split = LatencySplit()
        self._link_ms: Optional[float] = None  # newest sample not yet given to the policy
        self._last_sent_seq: Optional[int] = None
        self.edge_restarts = 0

    def on_sent(self, now_s: float, seq: int, size_bytes: int) -> bool:
        """The edge sent a frame; True if its sequence numbers restarted (a new edge process)."""
        restarted = (self._last_sent_seq is not None
                     and seq + SEQ_RESTART_DROP < self._last_sent_seq)
        if restarted:
            self.delivery.reset()  # its seq 1.. are not the old process's frames
            self.edge_restarts += 1
        self._last_sent_seq = seq
        self.delivery.on_sent(seq, now_s, size_bytes)
        return restarted

    def on_arrival(self, seq: int, send_s: Optional[float], arrival_s: Optional[float],
                   size_bytes: int) -> None:
        """The cloud reported a frame's arrival; stamps None when implausible (still delivered)."""
        self.delivery.on_arrived(seq)
        if send_s is not None and arrival_s is not None:
            self.estimator.on_frame(send_s, arrival_s, size_bytes, seq)

    def on_cloud_timing(self, stamp_ns: int, queue_ms: float, inference_ms: float) -> None:
        """The cloud reported how long a segmented frame spent there."""
        link_ms = self.split.on_cloud(stamp_ns, max(0.0, queue_ms) + max(0.0, inference_ms))
        if link_ms is not None:
            self._link_ms = link_ms

    def on_mask(self, stamp_ns: int, end_to_end_ms: float) -> None:
        """A mask came back `end_to_end_ms` after its frame's acquisition."""
        link_ms = self.split.on_mask(stamp_ns, end_to_end_ms)
        if link_ms is not None:
            self._link_ms = link_ms

    def update(self, now_s: float, live_accuracy: Optional[float] = None) -> UplinkState:
        """Decide at `now_s`: cut on undelivered frames, then ask the policy."""
        delivered_kbps = self.delivery.congested_rate_kbps(now_s)
        if delivered_kbps is not None:
            self.estimator.on_undelivered(now_s, delivered_kbps)
        estimate = self.estimator.estimate_kbps(now_s)
        link_ms, self._link_ms = self._link_ms, None  # each sample used once
        decision = self.policy.update(now_s, estimate, link_ms, live_accuracy)
        return UplinkState(decision, estimate, link_ms)

    @property
    def current(self) -> Optional[ProfileEntry]:
        """The entry of the last decision."""
        return self.policy.current
