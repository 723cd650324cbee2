"""Cloud node: decode -> super-resolution -> segmentation, masks back to each robot.

Per robot namespace NS it subscribes `NS/frames` (cloudseg_ros/EncodedFrame) and publishes
`NS/mask` (mono8 class ids at the original resolution), `NS/mask_color` (rgb8 overlay for
rviz), `NS/mask/compressed` (PNG, for the downlink), `NS/cloud_stats` and `NS/keyframe_request`.
Every output keeps the frame's acquisition stamp. Receiving runs in one callback group and the
network in another, under a MultiThreadedExecutor, so parameters and decoding stay responsive.
Timers and rate limits run on the steady clock, so `use_sim_time` without `/clock` only costs
the stamps (and a warning), never the masks.
"""
import time

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from std_msgs.msg import Empty

from cloudseg_ros.core.frame_slots import LatestSlots
from cloudseg_ros.core.imageops import upsample_bilinear
from cloudseg_ros.core.mask_codec import PNG_MONO8_FORMAT, encode_mask_png
from cloudseg_ros.core.metrics import confusion_matrix, mean_iou
from cloudseg_ros.core.palette import overlay
from cloudseg_ros.core.receiver import ReceiveError, ReceiveLimits, check_probe_twin
from cloudseg_ros.core.selector import FrameKind
from cloudseg_ros.inference import model_files
from cloudseg_ros.inference.engine import EngineConfig, EngineError, EngineInput, SegEngine
from cloudseg_ros.msg import EncodedFrame
from cloudseg_ros.nets.checkpoint import CheckpointError
from cloudseg_ros.ros.cloud_params import PARAMS, CloudSettings  # noqa: F401 (PARAMS: tests)
from cloudseg_ros.ros.clock import SimClockWatch, steady_clock
from cloudseg_ros.ros.conversions import (compressed_msg, copy_header, mask_to_image_msg,
                                          rgb_to_image_msg)
from cloudseg_ros.ros.frames import arrival_time, cloud_stats_msg, meta_from_msg
from cloudseg_ros.ros.guard import CallbackGuard
from cloudseg_ros.ros.spin import run_node
from cloudseg_ros.ros.params import ParamBinder, declare_params
from cloudseg_ros.ros.robot_stream import RobotStream


def _stamp_ns(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def _output_pixels(item) -> int:
    """SR / mask pixels of a waiting (header, arrival, DecodedFrame)."""
    meta = item[2].meta
    return meta.orig_width * meta.orig_height


def _twin_size(mask, twin) -> tuple:
    """(width, height) of a probe's twin: its mask's, or its declared original's."""
    if mask is not None:
        return mask.shape[1], mask.shape[0]
    return twin.meta.orig_width, twin.meta.orig_height


class CloudNode(Node):
    """Serves SR + segmentation to one or more robots."""

    def __init__(self) -> None:
        super().__init__('cloud')
        values = declare_params(self, PARAMS)
        self._binder = ParamBinder(self, PARAMS, values, CloudSettings.from_values, self._apply)
        self.settings = self._binder.config
        self._engine_error = ''
        self.engine = self._load_engine(values)
        self._frames = LatestSlots()   # stream -> (header, DecodedFrame)
        self._probes = LatestSlots()
        self.guard = CallbackGuard(self.get_logger())
        limits = ReceiveLimits(values['max_input_pixels'], values['max_output_pixels'],
                               values['max_payload_bytes'], values['max_frame_rate_hz'])
        self._max_batch_pixels = values['max_batch_pixels']
        receive_group = MutuallyExclusiveCallbackGroup()
        self._streams = {}
        for namespace in values['robot_namespaces']:
            stream = RobotStream(self, namespace, receive_group, limits,
                                 values['max_keyframe_request_hz'])
            self._streams[stream.name] = stream
        self.create_timer(0.002, self.guard.wrap('inference', self._on_work),
                          callback_group=MutuallyExclusiveCallbackGroup(), clock=steady_clock())
        self._sim_clock_watch = SimClockWatch(self, callback_group=receive_group)
        self.get_logger().info(
            f"cloud: serving {', '.join(self._streams)}; SR '{values['sr_variant']}' "
            f"for scales {self.engine.supported_scales() if self.engine else '-'}; "
            f'pyramid reuse {self.settings.pyramid_reuse}; batch <= {self.settings.max_batch}')

    def _load_engine(self, values):
        models_dir = values['models_dir'] or model_files.default_models_dir()
        try:
            config = EngineConfig(
                seg_checkpoint=values['seg_model'] or model_files.seg_checkpoint(models_dir),
                sr_checkpoints=model_files.sr_checkpoints(models_dir, values['sr_variant']),
                sr_mode='bilinear' if values['sr_variant'] == 'bilinear' else 'model',
                device=values['device'], precision=values['precision'],
                pyramid_reuse=self.settings.pyramid_reuse, cuda_graphs=values['cuda_graphs'],
                compile=values['compile'],
                warmup_size=(values['warmup_width'], values['warmup_height']))
            return SegEngine(config)
        except (CheckpointError, EngineError, ValueError) as err:
            # Stay up (parameters, introspection) and reject frames with this reason.
            self.get_logger().error(f'engine not loaded, frames will be rejected: {err}')
            self._engine_error = str(err)
            return None

    def _apply(self, settings: CloudSettings) -> None:
        self.settings = settings
        if self.engine is not None:
            self.engine.config.pyramid_reuse = settings.pyramid_reuse

    def on_frame(self, stream: RobotStream, msg: EncodedFrame, info=None) -> None:
        """Receive callback: decode now (H.264 needs every frame), infer later."""
        arrival = arrival_time(self.get_clock(), info)  # the middleware's, not this callback's
        try:
            frame = stream.receiver.receive(meta_from_msg(msg), msg.data)
        except ReceiveError as err:
            self._reject(stream, str(err), err.want_keyframe)
            return
        item = (msg.header, arrival.to_msg(), frame)
        stream.stats_pub.publish(cloud_stats_msg(
            msg.header, item[1], frame, stream.receiver, self._frames.superseded.get(
                stream.name, 0), {}, 0, arrival.nanoseconds * 1e-9, stage='cloud_rx'))
        if msg.kind == FrameKind.PROBE:
            self._probes.put(stream.name, item)
            return
        stream.remember(stream.recent_frames, _stamp_ns(msg.header), frame)
        self._frames.put(stream.name, item)

    def _reject(self, stream: RobotStream, reason: str, want_keyframe: bool = False) -> None:
        self.get_logger().error(f'{stream.name}: frame rejected: {reason}',
                                throttle_duration_sec=2.0)
        if want_keyframe and stream.key_requests.allow(time.monotonic()):
            stream.key_pub.publish(Empty())

    def _on_work(self) -> None:
        batch = self._frames.take(self.settings.max_batch, _output_pixels,
                                  self._max_batch_pixels)
        if batch:
            self._segment_batch(batch)
        for name, item in self._probes.take(len(self._streams)):
            self._check_probe(self._streams[name], item)

    def _segment_batch(self, batch) -> None:
        if self.engine is None:
            for name, _ in batch:
                self._streams[name].receiver.count_rejected()
                self._reject(self._streams[name], self._engine_error)
            return
        inputs = [EngineInput(f.rgb, f.meta.scale, (f.meta.orig_width, f.meta.orig_height))
                  for _, (_, _, f) in batch]
        try:
            outputs = self.engine.process(inputs)
        except EngineError as err:
            for name, _ in batch:
                self._streams[name].receiver.count_rejected()
                self._reject(self._streams[name], str(err))
            return
        for (name, item), output in zip(batch, outputs):
            self._publish(self._streams[name], item, output, len(batch))

    def _publish(self, stream: RobotStream, item, output, batch_size: int) -> None:
        header, arrival_stamp, frame = item
        mask = output.mask
        stream.remember(stream.recent_masks, _stamp_ns(header), mask)
        out_header = copy_header(header)
        stream.mask_pub.publish(mask_to_image_msg(mask, out_header))
        if self.settings.publish_color:
            background = upsample_bilinear(frame.rgb, (mask.shape[1], mask.shape[0]))
            color = overlay(background, mask, self.engine.colors, self.settings.overlay_alpha,
                            self.engine.ignore_index)
            stream.color_pub.publish(rgb_to_image_msg(color, out_header))
        if self.settings.publish_compressed:
            stream.png_pub.publish(compressed_msg(out_header, PNG_MONO8_FORMAT,
                                                  encode_mask_png(mask)))
        now_s = self.get_clock().now().nanoseconds * 1e-9
        stream.stats_pub.publish(cloud_stats_msg(
            header, arrival_stamp, frame, stream.receiver,
            self._frames.superseded.get(stream.name, 0), output.timings_ms, batch_size, now_s))

    def _check_probe(self, stream: RobotStream, item) -> None:
        """Accuracy watchdog: the pipeline's mask vs the full-resolution mask of one image."""
        header, arrival_stamp, frame = item
        stamp_ns = _stamp_ns(header)
        pipeline_mask = stream.recent_masks.get(stamp_ns)
        twin = stream.recent_frames.get(stamp_ns)
        if self.engine is None or (pipeline_mask is None and twin is None):
            self.get_logger().warn(f'{stream.name}: probe skipped: its low-resolution twin was '
                                   'lost or rejected', throttle_duration_sec=10.0)
            return
        try:
            check_probe_twin(frame.meta, _twin_size(pipeline_mask, twin))
            if pipeline_mask is None:  # the twin was superseded before inference: run it now
                pipeline_mask = self.engine.process([EngineInput(
                    twin.rgb, twin.meta.scale, (frame.meta.width, frame.meta.height))])[0].mask
            hr_mask = self.engine.segment_hr(frame.rgb)
        except (EngineError, ReceiveError) as err:
            stream.receiver.count_rejected()
            self._reject(stream, f'probe: {err}')
            return
        cm = confusion_matrix(pipeline_mask, hr_mask, self.engine.num_classes, ignore_index=None)
        now_s = self.get_clock().now().nanoseconds * 1e-9
        stream.stats_pub.publish(cloud_stats_msg(
            header, arrival_stamp, frame, stream.receiver,
            self._frames.superseded.get(stream.name, 0), {}, 1, now_s, agreement=mean_iou(cm)))


def main(args=None) -> None:
    """Run the cloud node on a multi-threaded executor until shut down."""
    run_node(CloudNode, args, executor=lambda: MultiThreadedExecutor(num_threads=3))


if __name__ == '__main__':
    main()
