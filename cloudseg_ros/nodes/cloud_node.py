"""Cloud node: decode -> super-resolution -> segmentation, masks back to each robot.

Per robot namespace NS it subscribes `NS/frames` (cloudseg_ros/EncodedFrame) and publishes
`NS/mask` (mono8 class ids at the original resolution), `NS/mask_color` (rgb8 overlay for
rviz), `NS/mask/compressed` (PNG, for the downlink), `NS/cloud_stats` and `NS/keyframe_request`.
Every output keeps the frame's acquisition stamp, and is built only when it has a subscriber.

Threads (docs/FLEET.md): the executor only takes messages, checks and counts them
(`StreamReceiver.admit`) and answers parameters; `decode_threads` decode each robot's frames in
order (`core/serial_lanes.py`); one inference thread per engine (`device` may list several,
robots spread over them: `inference/engine_pool.py`) sleeps on a condition variable until a
frame waits, then forms a batch across robots with a deadline, fairly (`inference/
fleet_queue.py`); `output_threads` build PNGs and overlays (`ros/cloud_outputs.py`; on a GPU
the engine blends the overlays, `overlay_on_device`). Robots join and leave when
`robot_namespaces` is set. Timers and rate limits run on the steady clock.
"""
import time
from typing import Optional

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from std_msgs.msg import Empty

from cloudseg_ros.core.health import StreamCounters
from cloudseg_ros.core.imageops import upsample_bilinear
from cloudseg_ros.core.metrics import confusion_matrix, mean_iou
from cloudseg_ros.core.palette import overlay
from cloudseg_ros.core.receiver import ReceiveError, ReceiveLimits, check_probe_twin
from cloudseg_ros.core.selector import FrameKind
from cloudseg_ros.core.serial_lanes import SerialLanes
from cloudseg_ros.inference.engine import EngineError, EngineInput, SegEngine
from cloudseg_ros.inference.engine_pool import EnginePool
from cloudseg_ros.msg import EncodedFrame
from cloudseg_ros.ros.cloud_outputs import OutputStage, subscribed
from cloudseg_ros.ros.cloud_params import (  # noqa: F401 (PARAMS: tests)
    PARAMS, CloudSettings, engine_configs)
from cloudseg_ros.ros.clock import SimClockWatch
from cloudseg_ros.ros.conversions import copy_header, stamp_to_s
from cloudseg_ros.ros.diagnostics import DIAGNOSTICS_PARAMS, DiagnosticsPublisher
from cloudseg_ros.ros.frames import arrival_time, cloud_stats_msg, meta_from_msg
from cloudseg_ros.ros.guard import CallbackGuard
from cloudseg_ros.ros.lifecycle import ManagedNode, autostart
from cloudseg_ros.ros.log_bridge import forward_python_logs
from cloudseg_ros.ros.spin import run_node
from cloudseg_ros.ros.params import ParamBinder
from cloudseg_ros.ros.robot_stream import RobotStream
from cloudseg_ros.ros.server_pool import attach_server_pool
from cloudseg_ros.ros.zenoh_uplink import UPLINK_PARAMS, attach_cloud_uplink

OUTPUT_BACKLOG = 16  # frames whose overlay / PNG may wait for an output thread


def _stamp_ns(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def _output_pixels(item) -> int:
    """SR / mask pixels of a waiting (header, arrival, DecodedFrame)."""
    meta = item[2].meta
    return meta.orig_width * meta.orig_height


def _built(rgb):
    """A colorize callable that returns an overlay already built (by the engine)."""
    return lambda _mask: rgb


def _twin_size(mask, twin) -> tuple:
    """(width, height) of a probe's twin: its mask's, or its declared original's."""
    if mask is not None:
        return mask.shape[1], mask.shape[0]
    return twin.meta.orig_width, twin.meta.orig_height


class CloudNode(ManagedNode):
    """Serves SR + segmentation to a fleet of robots (a managed node: ros/lifecycle.py)."""

    # Until configure() builds them. Class defaults, because release() also runs when the
    # construction itself failed (a parameter of the wrong type given at start).
    _binder = _pool = _decoders = _outputs = _uplink = _server_pool = None

    def __init__(self) -> None:
        super().__init__('cloud', PARAMS + UPLINK_PARAMS + DIAGNOSTICS_PARAMS)
        forward_python_logs(self)  # the engine's warnings reach /rosout
        self.guard = CallbackGuard(self.get_logger())
        self._binder = self._pool = self._decoders = self._outputs = self._uplink = None
        self._server_pool = None  # its heartbeat timer pauses while inactive: others take over
        self._streams = {}

    def configure(self, values) -> None:
        """Check the parameters, load one engine per device, open the robots' streams.

        A missing or broken model raises (configure fails with the reason).
        """
        self._binder = ParamBinder(self, PARAMS, values, CloudSettings.from_values, self._apply)
        self.settings = self._binder.config
        engines = [SegEngine(config) for config in engine_configs(values, self.settings)]
        # Waiting items are (header, arrival stamp, DecodedFrame), per robot and engine.
        self._pool = EnginePool(engines, [f'{i}:{e.config.device}' for i, e in
                                          enumerate(engines)],
                                self._next_batch_args, self._serve, self.guard.wrap)
        self._limits = ReceiveLimits(values['max_input_pixels'], values['max_output_pixels'],
                                     values['max_payload_bytes'], values['max_frame_rate_hz'])
        self._key_request_hz = values['max_keyframe_request_hz']
        self._max_batch_pixels = values['max_batch_pixels']
        self._receive_group = MutuallyExclusiveCallbackGroup()
        self._decoders = SerialLanes(values['decode_threads'], values['max_decode_backlog'],
                                     'decode')
        self._outputs = OutputStage(values['output_threads'], OUTPUT_BACKLOG, self.guard.wrap)
        # With `server_pool` the pool decides which listed robots this server serves.
        self._server_pool = attach_server_pool(self, values, self.settings.robot_namespaces,
                                               self._set_robots)
        self._set_robots(() if self._server_pool else self.settings.robot_namespaces)
        self._uplink = attach_cloud_uplink(self, values, self._streams, self._receive_group)
        self._pool.start()
        self._diagnostics = DiagnosticsPublisher(self, values['diagnostics_period_s'],
                                                 self._health, self._receive_group)
        self._sim_clock_watch = SimClockWatch(self, callback_group=self._receive_group)
        self.get_logger().info(
            f"cloud: serving {', '.join(self._streams)}; {len(engines)} engine(s) on "
            f"{values['device']}; SR '{values['sr_variant']}' for scales "
            f'{engines[0].supported_scales()}; adapted segmentation for scales '
            f'{sorted(engines[0].seg_scale_models) or "none"}; pyramid reuse '
            f'{self.settings.pyramid_reuse}; batch <= {self.settings.max_batch} within '
            f'{self.settings.max_batch_wait_ms} ms')

    def release(self) -> None:
        """Stop the inference, decoding and output threads, close the zenoh link."""
        if self._pool is not None:
            self._pool.stop()
        for lanes in (self._decoders, self._outputs):
            if lanes is not None:
                lanes.shutdown()
        if self._uplink is not None:
            self._uplink.close()
        if self._binder is not None:
            self._binder.detach()
        self._binder = self._pool = self._decoders = self._outputs = self._uplink = None
        self._server_pool = None  # its publisher, subscription and timer: destroyed below
        self._streams = {}  # their publishers and subscription: destroyed by ManagedNode

    def _apply(self, settings: CloudSettings) -> None:
        if settings.robot_namespaces != self.settings.robot_namespaces:
            if getattr(self, '_uplink', None) is not None:
                # The zenoh router's access rules are built for the robots known at start.
                raise ValueError('robot_namespaces is fixed at start with uplink_transport '
                                 'zenoh (its access rules name every robot); restart the cloud')
            if self._server_pool:
                self._server_pool.set_fleet(settings.robot_namespaces)
            else:
                self._set_robots(settings.robot_namespaces)
        self.settings = settings
        for worker in self._pool.workers:
            worker.engine.config.pyramid_reuse = settings.pyramid_reuse

    def _set_robots(self, namespaces) -> None:
        """Robots join and leave: streams are created and destroyed to match `namespaces`."""
        streams = dict(self._streams)  # copy on write: other threads read self._streams
        wanted = {}
        for namespace in namespaces:
            name = namespace or self.get_namespace()
            if name in wanted:  # '' and the node's own namespace written out: one robot
                continue
            wanted[name] = streams.pop(name, None) or RobotStream(
                self, namespace, self._receive_group, self._limits, self._key_request_hz)
        self._streams = wanted
        if self._pool.workers:
            engines = self._pool.set_robots(list(wanted))
            if len(self._pool.workers) > 1:
                self.get_logger().info('robots per engine: ' + ', '.join(
                    f'{robot} -> {engine}' for robot, engine in sorted(engines.items())))
        for name, stream in streams.items():  # the robots that left
            stream.destroy(self)
            self.get_logger().info(f'{name}: robot left')

    def on_frame(self, stream: RobotStream, msg: EncodedFrame, info=None) -> None:
        """Receive callback: count and check now, decode on the robot's lane, infer later."""
        if not self.is_active:
            return  # inactive (lifecycle): frames are dropped unread and uncounted
        arrival = arrival_time(self.get_clock(), info)  # the middleware's, not this callback's
        try:
            admitted = stream.receiver.admit(meta_from_msg(msg), msg.data)
        except ReceiveError as err:
            self._reject(stream, str(err), err.want_keyframe)
            return
        job = self.guard.wrap(f'{stream.name}: decode',
                              lambda: self._decode(stream, msg, admitted, arrival),
                              on_error=stream.receiver.count_rejected)
        if not self._decoders.submit(stream.name, job):
            err = stream.receiver.drop_admitted(admitted, 'decoding backlog full '
                                                '(max_decode_backlog): frame dropped')
            self._reject(stream, str(err), err.want_keyframe)

    def _decode(self, stream: RobotStream, msg: EncodedFrame, admitted, arrival) -> None:
        """On the robot's decoding lane: decode, report the arrival, queue for inference."""
        try:
            frame = stream.receiver.decode(admitted, msg.data)
        except ReceiveError as err:
            self._reject(stream, str(err), err.want_keyframe)
            return
        item = (msg.header, arrival.to_msg(), frame)
        if subscribed(stream.stats_pub):
            stream.stats_pub.publish(cloud_stats_msg(
                msg.header, item[1], frame, stream.receiver,
                self._pool.superseded(stream.name), {}, 0,
                arrival.nanoseconds * 1e-9, stage='cloud_rx'))
        if msg.kind == FrameKind.PROBE:
            queued = self._pool.put_probe(stream.name, item)
        else:
            stream.remember(stream.recent_frames, _stamp_ns(msg.header), frame)
            queued = self._pool.put_frame(stream.name, item)
        if not queued:  # the robot just left
            stream.receiver.count_rejected()
            self._reject(stream, 'robot no longer served')

    def _reject(self, stream: RobotStream, reason: str, want_keyframe: bool = False) -> None:
        self.get_logger().error(f'{stream.name}: frame rejected: {reason}',
                                throttle_duration_sec=2.0)
        if want_keyframe and stream.key_requests.allow(time.monotonic()):
            stream.key_pub.publish(Empty())

    def _health(self) -> list:
        """/diagnostics: one status per robot stream, from its counters."""
        engine = 'loaded' if self._pool.workers else 'none'
        now_s = time.monotonic()
        return [stream.health.report(now_s, StreamCounters(
            stream.receiver.frames_in, stream.receiver.rejected, self._pool.superseded(name),
            stream.receiver.lost), engine) for name, stream in self._streams.items()]

    def _next_batch_args(self, robots: int) -> tuple:
        """(max_items, max_wait_s, cost, budget) of the next batch of an engine's robots."""
        settings = self.settings
        return (min(settings.max_batch, max(1, robots)), settings.max_batch_wait_ms * 1e-3,
                _output_pixels, self._max_batch_pixels)

    def _serve(self, worker, batch, probes) -> None:
        """On an engine's thread: segment a batch of its robots' frames, then their probes."""
        streams = self._streams
        batch = [(streams[name], item) for name, item in batch if name in streams]
        if batch:
            self._segment_batch(worker.engine, batch)
        for name, item in probes:
            if name in streams:
                self._check_probe(worker.engine, streams[name], item)

    def _segment_batch(self, engine, batch) -> None:
        """One engine call for frames of several robots; a refused frame fails alone."""
        results = engine.process_isolated([
            EngineInput(f.rgb, f.meta.scale, (f.meta.orig_width, f.meta.orig_height),
                        self._overlay_alpha(engine, stream))
            for stream, (_, _, f) in batch])
        for (stream, item), result in zip(batch, results):
            if isinstance(result, EngineError):
                stream.receiver.count_rejected()
                self._reject(stream, str(result))
            else:
                self._publish(engine, stream, item, result, len(batch))

    def _publish(self, engine, stream: RobotStream, item, output, batch_size: int) -> None:
        header, arrival_stamp, frame = item
        stream.remember(stream.recent_masks, _stamp_ns(header), output.mask)
        now_s = self.get_clock().now().nanoseconds * 1e-9
        stream.health.on_mask((now_s - stamp_to_s(header.stamp)) * 1e3)
        colorize = None
        if output.overlay is not None:  # blended by the engine, on its device
            colorize = _built(output.overlay)
        elif self.settings.publish_color:
            colorize = self._colorizer(engine, frame)
        self._outputs.publish(stream, copy_header(header), output.mask, colorize,
                              self.settings.publish_compressed)
        if subscribed(stream.stats_pub):
            stream.stats_pub.publish(cloud_stats_msg(
                header, arrival_stamp, frame, stream.receiver,
                self._pool.superseded(stream.name), output.timings_ms, batch_size, now_s))

    def _overlay_alpha(self, engine, stream: RobotStream) -> Optional[float]:
        """The alpha to ask the engine for this robot's overlay with, or None (not wanted, or
        the engine does not blend: then the output threads do, if someone subscribes)."""
        if engine.overlays_on_device and self.settings.publish_color \
                and subscribed(stream.color_pub):
            return self.settings.overlay_alpha
        return None

    def _colorizer(self, engine, frame):
        """mask -> overlay on the received frame (run on an output thread, if subscribed)."""
        colors, ignore = engine.colors, engine.ignore_index
        alpha = self.settings.overlay_alpha
        return lambda mask: overlay(upsample_bilinear(frame.rgb, (mask.shape[1], mask.shape[0])),
                                    mask, colors, alpha, ignore)

    def _check_probe(self, engine, stream: RobotStream, item) -> None:
        """Accuracy watchdog: the pipeline's mask vs the full-resolution mask of one image."""
        header, arrival_stamp, frame = item
        stamp_ns = _stamp_ns(header)
        pipeline_mask = stream.recent_masks.get(stamp_ns)
        twin = stream.recent_frames.get(stamp_ns)
        if pipeline_mask is None and twin is None:
            self.get_logger().warn(f'{stream.name}: probe skipped: its low-resolution twin was '
                                   'lost or rejected', throttle_duration_sec=10.0)
            return
        try:
            check_probe_twin(frame.meta, _twin_size(pipeline_mask, twin))
            if pipeline_mask is None:  # the twin was superseded before inference: run it now
                pipeline_mask = engine.process([EngineInput(
                    twin.rgb, twin.meta.scale, (frame.meta.width, frame.meta.height))])[0].mask
            hr_mask = engine.segment_hr(frame.rgb)
        except (EngineError, ReceiveError) as err:
            stream.receiver.count_rejected()
            self._reject(stream, f'probe: {err}')
            return
        cm = confusion_matrix(pipeline_mask, hr_mask, engine.num_classes, ignore_index=None)
        now_s = self.get_clock().now().nanoseconds * 1e-9
        stream.stats_pub.publish(cloud_stats_msg(
            header, arrival_stamp, frame, stream.receiver, self._pool.superseded(stream.name),
            {}, 1, now_s, agreement=mean_iou(cm)))


def main(args=None) -> None:
    """Run the cloud node on a single-threaded executor.

    Its callbacks only count, check and hand frames to the decode lanes and engine threads, so
    a second executor thread buys nothing but Python work under the GIL the engine needs:
    `cloudseg bench-executor` measured 158 us of CPU per received frame against 327-371 for
    MultiThreadedExecutor(2) (medians, 16 robots x 15 fps, docs/FLEET.md).
    """
    run_node(lambda: autostart(CloudNode()), args)


if __name__ == '__main__':
    main()
