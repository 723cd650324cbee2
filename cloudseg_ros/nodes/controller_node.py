"""Adaptive controller: estimates the uplink and retunes the edge node through its parameters.

Watches `cloud_stats` (arrivals for the bandwidth estimate, the cloud's queue and inference
time, probe agreement for the accuracy watchdog), `mask/compressed` (end-to-end latency on this
robot's clock) and `edge_stats` (what the robot sends). Every `update_period_s` it picks the
profile entry that fits (core/uplink.py: estimator, sent-vs-arrived tracker, latency split,
policy) and sets the edge node's parameters through its parameter services, which is what
`ros2 param set` does. Nothing is taken on trust (core/param_sync.py): the edge's values are
read back after every set and every few seconds, what differs is sent again with a bounded
backoff, refusals are logged with the edge's reason, and a restarted edge (its services
reappear, its sequence numbers start again, or its values diverge) is read and set again.
Publishes `controller_state` (latched) with the configuration the edge really runs.
"""
import math
import time
from dataclasses import dataclass

from rclpy.node import Node
from sensor_msgs.msg import CompressedImage
from std_msgs.msg import Header

from cloudseg_ros.core.health import controller_report
from cloudseg_ros.core.peer_input import printable, stamp_plausible
from cloudseg_ros.core.param_sync import ParamSync, Request
from cloudseg_ros.core.policy import LatencyTracker, PolicyConfig
from cloudseg_ros.core.profile import (EDGE_PARAMETERS, load_profile, PRESET_PARAMETER,
                                       StreamConfig)
from cloudseg_ros.core.uplink import UplinkController
from cloudseg_ros.msg import ControllerState, PipelineStats
from cloudseg_ros.paths import package_file
from cloudseg_ros.ros import qos
from cloudseg_ros.ros.conversions import stamp_to_s
from cloudseg_ros.ros.diagnostics import DIAGNOSTICS_PARAMS, DiagnosticsPublisher
from cloudseg_ros.ros.guard import CallbackGuard
from cloudseg_ros.ros.param_client import RemoteParams, values_by_name
from cloudseg_ros.ros.spin import run_node
from cloudseg_ros.ros.params import ParamBinder, ParamSpec, config_from_values, declare_params

PARAMS = (
    ParamSpec('profile', '', "Profile YAML ('' = the package's config/profile.yaml).",
              read_only=True),
    ParamSpec('edge_node', 'edge', 'Edge node to retune; a relative name is in this namespace.',
              read_only=True),
    ParamSpec('update_period_s', 0.5, 'Seconds between two decisions.', 0.05, 10.0,
              read_only=True),
    ParamSpec('enabled', True, 'Apply decisions to the edge node (false: advise only).'),
    ParamSpec('headroom', 0.8, 'Fraction of the estimated bandwidth the stream may use.',
              0.05, 1.0),
    ParamSpec('upgrade_hold_s', 3.0, 'Seconds a better entry must fit before switching up.',
              0.0, 60.0),
    ParamSpec('latency_limit_ms', 400.0, 'End-to-end latency above which it steps down, ms.',
              10.0, 60000.0),
    ParamSpec('latency_cooldown_s', 5.0, 'Seconds without upgrades after a latency step.',
              0.0, 600.0),
    ParamSpec('accuracy_floor', 0.0,
              'Live agreement-mIoU (probes) under which smaller scales are preferred (0 = off).',
              0.0, 1.0),
    ParamSpec('min_switch_interval_s', 1.0, 'Fewest seconds between two switches.', 0.0, 60.0),
    ParamSpec('max_clock_offset_s', 5.0,
              "Stamps in cloud_stats and masks more than this ahead of this node's clock (or "
              'this + 60 s behind it) are ignored and counted; robot and cloud clocks must '
              'agree within it, seconds.', 0.1, 1e9),
)

# Reports may come late (a congested link queues them) but one about a frame older than this
# describes a link that no longer exists.
MAX_REPORT_AGE_S = 60.0


@dataclass(frozen=True)
class ControllerSettings:
    """Live settings: the policy's tuning plus whether decisions are applied."""

    enabled: bool
    policy: PolicyConfig
    max_clock_offset_s: float

    @staticmethod
    def from_values(values) -> 'ControllerSettings':
        """Build and validate; ValueError names what is wrong."""
        policy = config_from_values(PolicyConfig, values)
        policy.validate()
        return ControllerSettings(bool(values['enabled']), policy,
                                  float(values['max_clock_offset_s']))


class ControllerNode(Node):
    """Keeps the robot's stream within the uplink, at the best accuracy that fits."""

    def __init__(self) -> None:
        super().__init__('controller')
        values = declare_params(self, PARAMS + DIAGNOSTICS_PARAMS)
        self._binder = ParamBinder(self, PARAMS, values, ControllerSettings.from_values,
                                   self._apply)
        self.settings = self._binder.config
        self._inputs_rejected = 0
        guard = CallbackGuard(self.get_logger())
        self._guarded = lambda name, cb: guard.wrap(name, cb, self._count_rejected)
        path = values['profile'] or package_file('config', 'profile.yaml')
        self._profile_error = ''
        self._last = (None, None, '')  # estimate kbps, entry, reason of the last switch
        self._acknowledged = False  # the edge runs the chosen entry (read back)
        # What the edge runs, what to send it: a profile entry and the profile's x264 preset.
        self._sync = ParamSync(EDGE_PARAMETERS + (PRESET_PARAMETER,))
        self._wanted = {}  # edge parameters of the chosen entry
        self._diagnostics = DiagnosticsPublisher(self, values['diagnostics_period_s'],
                                                 self._health)
        try:
            self.profile = load_profile(path)
        except (OSError, ValueError) as err:
            self._profile_error = str(err)
            # Stay up (parameters, introspection) but say clearly why nothing is retuned.
            self.get_logger().error(f'no profile, the edge will not be retuned: {err}')
            return
        self.uplink = UplinkController(self.profile.front, self.settings.policy)
        self.edge = RemoteParams(self, self._resolve(values['edge_node']))
        self._end_to_end = LatencyTracker()
        self._accuracy = math.nan
        self._sent_bytes = []  # (time_s, bytes) of the last seconds, from edge_stats
        self._state_pub = self.create_publisher(ControllerState, 'controller_state', qos.STATUS)
        self.create_subscription(PipelineStats, 'cloud_stats',
                                 self._guarded('cloud_stats', self._on_cloud_stats), qos.STATS)
        self.create_subscription(PipelineStats, 'edge_stats',
                                 self._guarded('edge_stats', self._on_edge_stats), qos.STATS)
        self.create_subscription(CompressedImage, 'mask/compressed',
                                 self._guarded('mask', self._on_mask), qos.SENSOR)
        self.create_timer(values['update_period_s'], self._guarded('update', self._on_timer))
        self.get_logger().info(
            f"controller: {len(self.profile.front)} profile entries from '{path}', retuning "
            f'{self.edge.target}, headroom {self.settings.policy.headroom}')

    def _resolve(self, name: str) -> str:
        if name.startswith('/'):
            return name
        namespace = self.get_namespace().rstrip('/')
        return f'{namespace}/{name}'

    def _apply(self, settings: ControllerSettings) -> None:
        self.settings = settings
        if hasattr(self, 'uplink'):
            self.uplink.policy.set_config(settings.policy)

    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _count_rejected(self) -> None:
        self._inputs_rejected += 1

    def _plausible(self, what: str, *stamps) -> bool:
        """Whether every stamp is near this node's clock; count and warn if not."""
        now_s = self._now_s()
        stamps_s = [stamp_to_s(stamp) for stamp in stamps]
        limit_s = self.settings.max_clock_offset_s
        if all(stamp_plausible(t_s, now_s, limit_s, limit_s + MAX_REPORT_AGE_S)
               for t_s in stamps_s):
            return True
        self._count_rejected()
        worst = max((t_s - now_s for t_s in stamps_s), key=abs)
        self.get_logger().warn(f'{what} ignored: stamp {worst:+.1f} s from this clock (limits: '
                               f'+{limit_s} s ahead, -{limit_s + MAX_REPORT_AGE_S} s behind; '
                               'clocks not synchronised?)', throttle_duration_sec=5.0)
        return False

    def _on_cloud_stats(self, msg: PipelineStats) -> None:
        plausible = self._plausible('cloud_stats', msg.header.stamp, msg.arrival_stamp)
        if msg.stage == 'cloud_rx':
            # It did arrive, whatever its stamps say; implausible stamps stay out of the math.
            stamps = ((stamp_to_s(msg.header.stamp), stamp_to_s(msg.arrival_stamp))
                      if plausible else (None, None))
            self.uplink.on_arrival(msg.seq, *stamps, msg.frame_bytes)
        elif plausible and 0.0 <= msg.probe_agreement_miou <= 1.0:  # NaN: not a probe
            self._accuracy = msg.probe_agreement_miou
        elif plausible and msg.stage == 'cloud':
            self.uplink.on_cloud_timing(_stamp_ns(msg.header.stamp), msg.queue_ms,
                                        msg.inference_ms)

    def _on_edge_stats(self, msg: PipelineStats) -> None:
        now_s = self._now_s()
        if self.uplink.on_sent(now_s, msg.seq, msg.frame_bytes):
            self.get_logger().info('edge restarted (sequence numbers start again): '
                                   're-applying its configuration')
            self._sync.on_restart()
        self._sent_bytes.append((now_s, msg.frame_bytes))
        self._sent_bytes = [(t, b) for t, b in self._sent_bytes if now_s - t <= 2.0]

    def _on_mask(self, msg: CompressedImage) -> None:
        if self._plausible('mask', msg.header.stamp):
            now_s = self._now_s()
            latency_ms = (now_s - stamp_to_s(msg.header.stamp)) * 1e3
            self._end_to_end.add(now_s, latency_ms)
            self.uplink.on_mask(_stamp_ns(msg.header.stamp), latency_ms)

    def _on_timer(self) -> None:
        now_s = self._now_s()
        state = self.uplink.update(now_s, self._accuracy)
        self._accuracy = math.nan  # each sample used once
        decision = state.decision
        if decision.changed:
            self.get_logger().info(f'switching to {decision.entry.name}: {decision.reason}')
        self._last = (state.estimate_kbps, decision.entry.name,
                      decision.reason if decision.changed else self._last[2])
        self._wanted = {**decision.entry.config.edge_parameters(),
                        PRESET_PARAMETER: self.profile.h264_preset}
        self._sync_edge(time.monotonic())
        self._acknowledged = self._sync.in_sync(self._wanted)
        self._state_pub.publish(self._state(decision, state.estimate_kbps))

    def _health(self) -> list:
        """/diagnostics: bandwidth estimate, chosen entry, last switch, edge acknowledged."""
        name = self.get_namespace()
        return [controller_report(name, *self._last, self._acknowledged, self.settings.enabled,
                                  self._profile_error, self._sync.status(self._wanted))]

    def _sync_edge(self, now_s: float) -> None:
        """Send the request core/param_sync.py asks for (sets only when enabled).

        Its timeouts and backoff run on the steady clock (`now_s`), like the link itself.
        """
        if self._sync.on_presence(self.edge.ready()):
            self.get_logger().info(f'edge {self.edge.target} is up: reading its configuration')
        timeouts = self._sync.timeouts
        wanted = self._wanted if self.settings.enabled else {}
        request = self._sync.next_request(now_s, wanted)
        if self._sync.timeouts > timeouts:
            self.get_logger().warn(f'{self.edge.target} did not answer in time: asking again '
                                   f'(attempt {self._sync.failures + 1})',
                                   throttle_duration_sec=5.0)
        if request is None:
            return
        if request.kind == 'get':
            future = self.edge.get_async(list(request.names))
        else:
            future = self.edge.set_async(request.values)
        future.add_done_callback(
            self._guarded('edge parameters', lambda f: self._on_edge_answer(f, request)))

    def _on_edge_answer(self, future, request: Request) -> None:
        """Feed the edge's answer to the sync; log refusals with the edge's reason."""
        now_s = time.monotonic()
        if request.kind == 'get':
            values = values_by_name(list(request.names), future.result())
            self._sync.on_get_done(now_s, request, values)
            return
        results = [(r.successful, printable(r.reason, 200)) for r in future.result().results]
        for refusal in self._sync.on_set_done(now_s, request, results):
            self.get_logger().error(f'edge refused {refusal}')

    def _state(self, decision, estimate: float) -> ControllerState:
        """The state message; the stream fields are what the edge runs (read back)."""
        cfg = StreamConfig.from_edge_parameters(self._sync.running or {})
        sent_kbps = sum(b for _, b in self._sent_bytes) * 8e-3 / 2.0
        policy = self.uplink.policy
        return ControllerState(
            header=Header(stamp=self.get_clock().now().to_msg()),
            bandwidth_estimate_kbps=estimate, bitrate_kbps=sent_kbps,
            latency_ms=_nan_if_none(self._end_to_end.smoothed_ms),
            link_latency_ms=_nan_if_none(policy.latency_ms),
            agreement_miou=_nan_if_none(policy.live_accuracy),
            **_stream_fields(cfg), target_config=decision.entry.name,
            edge_in_sync=self._acknowledged, edge_status=self._sync.status(self._wanted),
            reason=decision.reason, inputs_rejected=self._inputs_rejected)


def _stamp_ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def _stream_fields(cfg) -> dict:
    """ControllerState's stream fields of a StreamConfig; ''/0/-1/NaN when None (unknown)."""
    if cfg is None:
        return dict(config_name='', scale=0, codec='', quality=-1, max_rate_hz=math.nan,
                    useful_threshold=math.nan, key_threshold=math.nan)
    return dict(config_name=cfg.name, scale=cfg.scale, codec=cfg.codec, quality=cfg.quality,
                max_rate_hz=cfg.max_rate_hz, useful_threshold=cfg.useful_threshold,
                key_threshold=cfg.key_threshold)


def _nan_if_none(value) -> float:
    return math.nan if value is None else value


def main(args=None) -> None:
    """Run the controller until shut down."""
    run_node(ControllerNode, args)


if __name__ == '__main__':
    main()
