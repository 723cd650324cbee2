"""Adaptive controller: estimates the uplink and retunes the edge node through its parameters.

Watches `cloud_stats` (arrivals for the bandwidth estimate, the cloud's queue and inference
time, probe agreement for the accuracy watchdog), `mask/compressed` (end-to-end latency on this
robot's clock) and `edge_stats` (what the robot sends). Every `update_period_s` it picks the
profile entry that fits (core/uplink.py: estimator, sent-vs-arrived tracker, latency split,
policy) and sets the edge node's parameters through its parameter services, which is what
`ros2 param set` does. The configuration counts as applied only once the edge has acknowledged
it: until then it is (re)sent every update, as soon as the edge's service is there; it is sent
again when the edge restarts (its sequence numbers start again, or its service reappears).
Publishes `controller_state` (latched).
"""
import math
from dataclasses import dataclass

from rclpy.node import Node
from sensor_msgs.msg import CompressedImage
from std_msgs.msg import Header

from cloudseg_ros.core.health import controller_report
from cloudseg_ros.core.peer_input import printable, stamp_plausible
from cloudseg_ros.core.policy import LatencyTracker, PolicyConfig
from cloudseg_ros.core.profile import load_profile
from cloudseg_ros.core.uplink import UplinkController
from cloudseg_ros.msg import ControllerState, PipelineStats
from cloudseg_ros.paths import package_file
from cloudseg_ros.ros import qos
from cloudseg_ros.ros.conversions import stamp_to_s
from cloudseg_ros.ros.diagnostics import DIAGNOSTICS_PARAMS, DiagnosticsPublisher
from cloudseg_ros.ros.guard import CallbackGuard
from cloudseg_ros.ros.param_client import RemoteParams
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
# A set_parameters request unanswered this long is given up and sent again.
SET_TIMEOUT_S = 2.0


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
        self._acknowledged = False  # the edge runs the chosen entry
        self._applied = None  # edge parameters the edge acknowledged (None: not yet / lost)
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
        self._pending = None  # (parameters, sent at s) of the request in flight
        self._edge_was_ready = False
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
            self._applied = None
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
        wanted = decision.entry.config.edge_parameters()
        self._acknowledged = wanted == self._applied
        if self.settings.enabled:
            self._apply_to_edge(now_s, wanted)
        self._state_pub.publish(self._state(decision, state.estimate_kbps))

    def _health(self) -> list:
        """/diagnostics: bandwidth estimate, chosen entry, last switch, edge acknowledged."""
        name = self.get_namespace()
        return [controller_report(name, *self._last, self._acknowledged,
                                  self.settings.enabled, self._profile_error)]

    def _apply_to_edge(self, now_s: float, wanted: dict) -> None:
        """Send `wanted` until the edge acknowledges it; again after the edge comes back."""
        ready = self.edge.ready()
        if ready and not self._edge_was_ready:
            self._applied = None  # (re)appeared: a new edge process has its own defaults
        self._edge_was_ready = ready
        if wanted == self._applied or not ready:
            return
        if self._pending is not None and now_s - self._pending[1] < SET_TIMEOUT_S:
            return  # one request at a time; a lost one is retried after SET_TIMEOUT_S
        self._pending = (dict(wanted), now_s)
        future = self.edge.set_async(wanted)
        future.add_done_callback(
            self._guarded('set parameters', lambda f: self._on_set_done(f, dict(wanted))))

    def _on_set_done(self, future, sent: dict) -> None:
        if self._pending is not None and self._pending[0] == sent:
            self._pending = None
        failed = [printable(r.reason, 200) for r in future.result().results if not r.successful]
        if failed:
            self.get_logger().error(f"edge refused the new configuration: {'; '.join(failed)}",
                                    throttle_duration_sec=5.0)
            return
        self._applied = sent

    def _state(self, decision, estimate: float) -> ControllerState:
        cfg = decision.entry.config
        sent_kbps = sum(b for _, b in self._sent_bytes) * 8e-3 / 2.0
        policy = self.uplink.policy
        return ControllerState(
            header=Header(stamp=self.get_clock().now().to_msg()),
            bandwidth_estimate_kbps=estimate, bitrate_kbps=sent_kbps,
            latency_ms=_nan_if_none(self._end_to_end.smoothed_ms),
            link_latency_ms=_nan_if_none(policy.latency_ms),
            agreement_miou=_nan_if_none(policy.live_accuracy),
            config_name=decision.entry.name, scale=cfg.scale, codec=cfg.codec,
            quality=cfg.quality, max_rate_hz=float(cfg.max_rate_hz),
            useful_threshold=float(cfg.useful_threshold),
            key_threshold=float(cfg.key_threshold), reason=decision.reason,
            inputs_rejected=self._inputs_rejected)


def _stamp_ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def _nan_if_none(value) -> float:
    return math.nan if value is None else value


def main(args=None) -> None:
    """Run the controller until shut down."""
    run_node(ControllerNode, args)


if __name__ == '__main__':
    main()
