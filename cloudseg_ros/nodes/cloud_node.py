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
from collections import OrderedDict
from dataclasses import dataclass

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Empty

from cloudseg_ros.core.frame_slots import LatestSlots
from cloudseg_ros.core.imageops import upsample_bilinear
from cloudseg_ros.core.mask_codec import PNG_MONO8_FORMAT, encode_mask_png
from cloudseg_ros.core.metrics import confusion_matrix, mean_iou
from cloudseg_ros.core.palette import overlay
from cloudseg_ros.core.rate_limit import TokenBucket
from cloudseg_ros.core.receiver import (ReceiveError, ReceiveLimits, StreamReceiver,
                                        check_probe_twin)
from cloudseg_ros.core.selector import FrameKind
from cloudseg_ros.inference import model_files
from cloudseg_ros.inference.engine import EngineConfig, EngineError, EngineInput, SegEngine
from cloudseg_ros.msg import EncodedFrame, PipelineStats
from cloudseg_ros.nets.checkpoint import CheckpointError
from cloudseg_ros.ros import qos
from cloudseg_ros.ros.clock import SimClockWatch, steady_clock
from cloudseg_ros.ros.conversions import (compressed_msg, copy_header, mask_to_image_msg,
                                          rgb_to_image_msg)
from cloudseg_ros.ros.frames import arrival_time, cloud_stats_msg, meta_from_msg
from cloudseg_ros.ros.guard import CallbackGuard
from cloudseg_ros.ros.spin import run_node
from cloudseg_ros.ros.params import ParamBinder, ParamSpec, declare_params

LIMITS = ReceiveLimits()  # defaults of the resource bounds
KEYFRAME_REQUEST_PERIOD_S = 0.5  # do not flood the uplink with requests
MAX_BATCH_PIXELS = 8 * 1920 * 1080  # a full batch of 1080p frames
PARAMS = (
    ParamSpec('robot_namespaces', [''], "Namespaces of the robots served ('' = this node's).",
              read_only=True),
    ParamSpec('models_dir', '', "Folder of the weights ('' = the package's models/).",
              read_only=True),
    ParamSpec('seg_model', '',
              'Segmentation model file: our ICNet checkpoint, or a TorchScript / torch.export '
              "(.pt2) network with its YAML beside it ('' = models_dir/seg_icnet.pt).",
              read_only=True),
    ParamSpec('sr_variant', 'aware', 'Super-resolution weights.',
              choices=model_files.SR_VARIANTS, read_only=True),
    ParamSpec('device', 'auto', "Torch device: 'auto' (CUDA if present), 'cpu', 'cuda:N'.",
              read_only=True),
    ParamSpec('precision', 'auto', 'auto (bf16 on GPU, fp32 on CPU), bf16, fp16 or fp32.',
              choices=('auto', 'bf16', 'fp16', 'fp32'), read_only=True),
    ParamSpec('cuda_graphs', False, 'Capture CUDA graphs per input shape (GPU only).',
              read_only=True),
    ParamSpec('compile', False,
              'torch.compile the networks (GPU; about 20 s per new frame size, paid at start '
              'for warmup_width x warmup_height).', read_only=True),
    ParamSpec('warmup_width', 480, 'Width of the warm-up frames (the cameras), pixels.',
              16, 8192, read_only=True),
    ParamSpec('warmup_height', 360, 'Height of the warm-up frames, pixels.', 16, 8192,
              read_only=True),
    # Resource bounds are read-only: whoever may set parameters must not lift them at run time.
    ParamSpec('max_input_pixels', LIMITS.max_input_pixels,
              'Largest received frame (payload width x height), pixels; larger ones are '
              'rejected before decoding.', 256, 8192 * 8192, read_only=True),
    ParamSpec('max_output_pixels', LIMITS.max_output_pixels,
              'Largest declared original size (= super-resolution and mask size), pixels; '
              'larger frames are rejected before decoding.', 256, 8192 * 8192, read_only=True),
    ParamSpec('max_payload_bytes', LIMITS.max_payload_bytes,
              'Largest encoded payload, bytes; larger ones are rejected unread.',
              1024, 1 << 30, read_only=True),
    ParamSpec('max_frame_rate_hz', 120.0,
              'Most frames per second accepted from one robot (bursts of one second pass); '
              'more are dropped before decoding.', 1.0, 10000.0, read_only=True),
    ParamSpec('max_keyframe_request_hz', 1.0 / KEYFRAME_REQUEST_PERIOD_S,
              'Most key-frame requests per second sent to one robot, Hz.', 0.01, 100.0,
              read_only=True),
    ParamSpec('max_batch_pixels', MAX_BATCH_PIXELS,
              'Memory budget of one inference batch: summed original (SR and mask) pixels; a '
              'batch stops before exceeding it (one frame always goes).', 256, 1 << 32,
              read_only=True),
    ParamSpec('pyramid_reuse', True,
              "Feed the received LR frame to ICNet's low-resolution branch (paper 3.2)."),
    ParamSpec('max_batch', 8, 'Most frames (of different robots) segmented together.', 1, 64),
    ParamSpec('publish_color', True, 'Publish mask_color (rgb8 overlay for rviz).'),
    ParamSpec('publish_compressed', True, 'Publish mask/compressed (PNG) for the downlink.'),
    ParamSpec('overlay_alpha', 0.5, 'Opacity of the class colours in mask_color (0..1).',
              0.0, 1.0),
)
RECENT_MASKS = 16  # masks kept per robot to pair a probe with its LR frame


@dataclass(frozen=True)
class CloudSettings:
    """The live-tunable part of the parameters."""

    pyramid_reuse: bool
    max_batch: int
    publish_color: bool
    publish_compressed: bool
    overlay_alpha: float

    @staticmethod
    def from_values(values) -> 'CloudSettings':
        """Build from {parameter: value}."""
        return CloudSettings(bool(values['pyramid_reuse']), int(values['max_batch']),
                             bool(values['publish_color']), bool(values['publish_compressed']),
                             float(values['overlay_alpha']))


class RobotStream:
    """Everything the node keeps per robot: receiver, publishers, recent masks."""

    def __init__(self, node: Node, namespace: str, group, limits: ReceiveLimits,
                 key_request_hz: float) -> None:
        prefix = namespace.rstrip('/') + '/' if namespace else ''
        self.name = namespace or node.get_namespace()
        self.receiver = StreamReceiver(limits)
        self.recent_masks = OrderedDict()  # acquisition stamp (ns) -> mask
        self.recent_frames = OrderedDict()  # acquisition stamp (ns) -> DecodedFrame
        self.key_requests = TokenBucket(key_request_hz)
        self.mask_pub = node.create_publisher(Image, prefix + 'mask', qos.RESULT)
        self.color_pub = node.create_publisher(Image, prefix + 'mask_color', qos.RESULT)
        self.png_pub = node.create_publisher(CompressedImage, prefix + 'mask/compressed',
                                             qos.RESULT)
        self.stats_pub = node.create_publisher(PipelineStats, prefix + 'cloud_stats', qos.STATS)
        self.key_pub = node.create_publisher(Empty, prefix + 'keyframe_request', qos.STATS)
        self.sub = node.create_subscription(
            EncodedFrame, prefix + 'frames',
            node.guard.wrap(f'{self.name}: frame',
                            lambda msg, info: node.on_frame(self, msg, info),
                            on_error=self._count_rejected),
            qos.ENCODED_STREAM, callback_group=group)

    def _count_rejected(self) -> None:
        self.receiver.rejected += 1

    def remember(self, table: OrderedDict, stamp_ns: int, item) -> None:
        """Keep a recent frame or mask (bounded) to pair probes with their LR twin."""
        table[stamp_ns] = item
        while len(table) > RECENT_MASKS:
            table.popitem(last=False)


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
                self._streams[name].receiver.rejected += 1
                self._reject(self._streams[name], self._engine_error)
            return
        inputs = [EngineInput(f.rgb, f.meta.scale, (f.meta.orig_width, f.meta.orig_height))
                  for _, (_, _, f) in batch]
        try:
            outputs = self.engine.process(inputs)
        except EngineError as err:
            for name, _ in batch:
                self._streams[name].receiver.rejected += 1
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
            stream.receiver.rejected += 1
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
