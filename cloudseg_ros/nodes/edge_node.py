"""Robot-side node: frame selector + downsampler + encoder, publishing low-resolution frames.

Subscribes `image_raw` (sensor_msgs/Image, any encoding of core/encodings.py; or, with
`transport:=compressed`, `image_raw/compressed`) and `keyframe_request` (std_msgs/Empty, from the
cloud after it lost the H.264 stream); publishes `frames` (cloudseg_ros/EncodedFrame),
`image_lowres/compressed` (JPEG, image_transport style, for rviz) and `edge_stats`.
Never imports torch: a robot may not have it. The selector's rates and intervals run on the
steady clock (the uplink's time), so `use_sim_time` without a `/clock` never stalls it.
"""
import secrets
import time
from dataclasses import dataclass

from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Empty

from cloudseg_ros.core.codecs import (CODECS, CodecError, EDGE_DEFAULT_X264_PRESET,
                                      EDGE_X264_PRESETS, encode_jpeg)
from cloudseg_ros.core.edge_pipeline import (EdgeConfig, EdgeFrame, EdgePipeline,
                                             KEY_REQUEST_MIN_INTERVAL_S)
from cloudseg_ros.core.health import EdgeCounters, EdgeHealth
from cloudseg_ros.core.imageops import ImageError
from cloudseg_ros.core.selector import FrameKind
from cloudseg_ros.msg import EncodedFrame, PipelineStats
from cloudseg_ros.ros import qos
from cloudseg_ros.ros.clock import SimClockWatch
from cloudseg_ros.ros.conversions import (compressed_msg, compressed_msg_to_rgb, copy_header,
                                          image_msg_to_rgb, stamp_to_s, uint8_field)
from cloudseg_ros.ros.diagnostics import DIAGNOSTICS_PARAMS, DiagnosticsPublisher
from cloudseg_ros.ros.guard import CallbackGuard
from cloudseg_ros.ros.lifecycle import ManagedNode, autostart
from cloudseg_ros.ros.spin import run_node
from cloudseg_ros.ros.params import ParamBinder, ParamSpec, config_from_values
from cloudseg_ros.ros.zenoh_uplink import UPLINK_PARAMS, edge_frames_publisher

# image_transport's format string: original encoding; codec; what the decoder returns (OpenCV
# decodes to BGR, which shows the right colours), so rviz and republish read it as a camera's.
JPEG_FORMAT = 'rgb8; jpeg compressed bgr8'
PREVIEW_JPEG_QUALITY = 80  # preview of H.264 frames only
TRANSPORTS = ('raw', 'compressed')

PARAMS = (
    ParamSpec('scale', 4, 'Downsampling factor before encoding (frame side / scale).', 1, 4),
    ParamSpec('codec', 'jpeg', 'Uplink codec.', choices=CODECS),
    ParamSpec('jpeg_quality', 75, 'JPEG quality (1 worst .. 100 best).', 1, 100),
    ParamSpec('h264_crf', 28, 'H.264 constant rate factor (0 best .. 51 worst).', 0, 51),
    ParamSpec('h264_preset', EDGE_DEFAULT_X264_PRESET,
              'x264 speed preset: a slower one sends fewer bits at a given CRF for more robot '
              'CPU (docs/bench_stream.md, "The robot\'s x264 preset"); a change restarts the '
              'stream.',
              choices=EDGE_X264_PRESETS),
    ParamSpec('max_rate_hz', 15.0, 'Highest rate of sent frames, Hz.', 0.1, 120.0),
    ParamSpec('useful_threshold', 0.03,
              'Content deviation (0..1) from the last sent frame above which a frame is sent.',
              0.0, 1.0),
    ParamSpec('key_threshold', 0.20,
              'Content deviation (0..1) from the last key frame above which a frame is a key '
              'frame (H.264 IDR).', 0.0, 1.0),
    ParamSpec('max_interval_s', 2.0, 'Send a frame at least this often, seconds.', 0.05, 60.0),
    ParamSpec('probe_interval_s', 0.0,
              'Send one full-resolution JPEG probe frame this often for the accuracy watchdog, '
              'seconds (0 = off).', 0.0, 3600.0),
    ParamSpec('transport', 'raw',
              'How the camera is read (image_transport style): raw subscribes image_raw '
              '(sensor_msgs/Image), compressed subscribes image_raw/compressed (JPEG or PNG '
              'sensor_msgs/CompressedImage), for cameras that only publish compressed.',
              choices=TRANSPORTS, read_only=True),
    ParamSpec('publish_compressed', True,
              'Also publish the sent low-resolution frames as JPEG on image_lowres/compressed '
              '(sensor_msgs/CompressedImage, for rviz; H.264 frames are re-encoded while '
              'someone subscribes).'),
    # Read-only: whoever may set parameters must not lift a resource bound at run time.
    ParamSpec('max_input_pixels', 3840 * 2160,
              'Largest camera image (width x height), pixels; larger images, and messages '
              'holding more data than one, are refused before any conversion or copy.',
              1, 8192 * 8192, read_only=True),
    # Guards: anyone allowed to set parameters could otherwise all but stop the stream
    # (`max_rate_hz 0.1` did, issue 12); the bounds themselves are fixed at start.
    ParamSpec('min_rate_hz', 1.0, 'Lowest max_rate_hz accepted, Hz.', 0.1, 120.0,
              read_only=True),
    ParamSpec('max_interval_cap_s', 10.0, 'Highest max_interval_s accepted, seconds.',
              0.05, 60.0, read_only=True),
)


@dataclass(frozen=True)
class EdgeSettings:
    """The node's parameters: the pipeline's config plus what only the node uses."""

    pipeline: EdgeConfig
    probe_interval_s: float
    publish_compressed: bool
    max_input_pixels: int

    @staticmethod
    def from_values(values) -> 'EdgeSettings':
        """Build and validate from {parameter: value}; ValueError says what is wrong."""
        if values['max_rate_hz'] < values['min_rate_hz']:
            raise ValueError(f"max_rate_hz {values['max_rate_hz']} < min_rate_hz "
                             f"{values['min_rate_hz']} (fixed at start)")
        if values['max_interval_s'] > values['max_interval_cap_s']:
            raise ValueError(f"max_interval_s {values['max_interval_s']} > max_interval_cap_s "
                             f"{values['max_interval_cap_s']} (fixed at start)")
        return EdgeSettings(config_from_values(EdgeConfig, values).validate(),
                            float(values['probe_interval_s']), bool(values['publish_compressed']),
                            int(values['max_input_pixels']))


class EdgeNode(ManagedNode):
    """Selects, downsamples and encodes camera frames for a low-bandwidth uplink.

    A managed node (ros/lifecycle.py): `configure` checks the parameters and opens the uplink,
    `activate` subscribes the camera and `keyframe_request`, `deactivate` unsubscribes them
    (an inactive edge receives no camera images at all).
    """

    # Until configure() builds them; release() also runs after a failed construction.
    _binder = _frames_pub = None

    def __init__(self) -> None:
        super().__init__('edge', PARAMS + UPLINK_PARAMS + DIAGNOSTICS_PARAMS)
        self._binder = self._frames_pub = None
        self._inputs = []

    def configure(self, values) -> None:
        """Check the parameters, build the pipeline, open the uplink (DDS or zenoh)."""
        self.settings = EdgeSettings.from_values(values)
        self.pipeline = EdgePipeline(self.settings.pipeline)
        self._transport = values['transport']
        self._guard = CallbackGuard(self.get_logger())
        self._frames_pub = edge_frames_publisher(self, self._guard, values)  # DDS or zenoh
        self._jpeg_pub = self.create_publisher(CompressedImage, 'image_lowres/compressed',
                                               qos.IMAGE)
        self._stats_pub = self.create_publisher(PipelineStats, 'edge_stats', qos.STATS)
        self._binder = ParamBinder(self, PARAMS, values, EdgeSettings.from_values, self._apply)
        self._sim_clock_watch = SimClockWatch(self)
        # A new value per start tells the receiver at once that this is a new stream.
        self._session_id = secrets.randbits(64) or 1
        self._seq = 0
        self._bytes_total = 0
        self._frames_in = 0
        self._rejected = 0
        self._last_probe_s = -float('inf')
        self._health = EdgeHealth(self.get_namespace())
        self._diagnostics = DiagnosticsPublisher(self, values['diagnostics_period_s'],
                                                 self._health_reports)
        cfg = self.pipeline.config
        self.get_logger().info(
            f'edge: scale x{cfg.scale}, {cfg.codec} (q{cfg.jpeg_quality}/crf{cfg.h264_crf} '
            f'{cfg.h264_preset}), '
            f'<= {cfg.max_rate_hz} Hz, thresholds useful {cfg.useful_threshold} / key '
            f'{cfg.key_threshold}, max interval {cfg.max_interval_s} s, images <= '
            f'{self.settings.max_input_pixels} px')

    def activate(self) -> None:
        """Subscribe the camera (raw or compressed) and the cloud's key-frame requests."""
        on_image = self._guard.wrap('image', self._on_image, self._count_rejected)
        if self._transport == 'compressed':
            camera = self.create_subscription(CompressedImage, 'image_raw/compressed',
                                              on_image, qos.SENSOR)
        else:
            camera = self.create_subscription(Image, 'image_raw', on_image, qos.SENSOR)
        self._inputs = [camera, self.create_subscription(
            Empty, 'keyframe_request', self._guard.wrap('keyframe request',
                                                        self._on_key_request), qos.STATS)]

    def deactivate(self) -> None:
        """Unsubscribe the camera and the key-frame requests."""
        for sub in self._inputs:
            self.destroy_subscription(sub)
        self._inputs = []

    def release(self) -> None:
        """Close the zenoh session, if any; stop checking parameter changes."""
        link = getattr(self._frames_pub, 'link', None)  # EdgeZenohUplink
        if link is not None:
            link.close()
        if self._binder is not None:
            self._binder.detach()
        self._binder = self._frames_pub = None
        self._inputs = []  # destroyed by ManagedNode

    def _apply(self, settings: EdgeSettings) -> None:
        self.pipeline.reconfigure(settings.pipeline)
        self.settings = settings
        cfg = settings.pipeline
        self.get_logger().info(f'edge reconfigured: scale x{cfg.scale}, {cfg.codec}, '
                               f'<= {cfg.max_rate_hz} Hz')

    def _health_reports(self) -> list:
        """/diagnostics: camera in, uplink out, the encoding it runs."""
        cfg = self.pipeline.config
        quality = cfg.jpeg_quality if cfg.codec == 'jpeg' else cfg.h264_crf
        return [self._health.report(time.monotonic(), EdgeCounters(
            self._frames_in, self._seq, self._bytes_total, self._rejected, cfg.scale,
            cfg.codec, quality))]

    def _on_key_request(self, _msg: Empty) -> None:
        if not self.pipeline.remote_key_request(time.monotonic()):
            self.get_logger().warn(
                f'key-frame requests faster than one per {KEY_REQUEST_MIN_INTERVAL_S} s '
                f'ignored ({self.pipeline.key_requests_ignored} so far)',
                throttle_duration_sec=10.0)

    def _count_rejected(self) -> None:
        self._rejected += 1

    def _on_image(self, msg: Image) -> None:
        self._frames_in += 1
        now_s = time.monotonic()
        try:
            rgb = self._to_rgb(msg)
            frames = [self.pipeline.process(rgb, now_s)]
            if self._probe_due(now_s):
                # The cloud compares the probe with the mask of the same image sent as usual,
                # so that image goes out even if the selector would have skipped it.
                if frames[0] is None:
                    frames[0] = self.pipeline.process(rgb, now_s, force_kind=FrameKind.FORCED)
                frames.append(self.pipeline.process(rgb, now_s, force_kind=FrameKind.PROBE))
        except (ImageError, CodecError, ValueError) as err:
            self._rejected += 1
            self.get_logger().error(f'frame rejected: {err}', throttle_duration_sec=2.0)
            return
        for frame in frames:
            if frame is not None:
                self._publish(msg, frame)

    def _to_rgb(self, msg):
        max_pixels = self.settings.max_input_pixels
        if isinstance(msg, CompressedImage):
            # A JPEG/PNG holds at most ~8 bytes per pixel of what it declares; more is junk.
            return compressed_msg_to_rgb(msg, max_pixels, max_bytes=8 * max_pixels)
        return image_msg_to_rgb(msg, max_pixels=max_pixels)

    def _probe_due(self, now_s: float) -> bool:
        interval_s = self.settings.probe_interval_s
        if interval_s <= 0 or now_s - self._last_probe_s < interval_s:
            return False
        self._last_probe_s = now_s
        return True

    def _publish(self, image: Image, frame: EdgeFrame) -> None:
        self._seq += 1
        self._bytes_total += len(frame.data)
        out = EncodedFrame(header=copy_header(image.header), session_id=self._session_id,
                           seq=self._seq, kind=int(frame.kind),
                           orig_width=frame.orig_width, orig_height=frame.orig_height,
                           width=frame.width, height=frame.height, scale=frame.scale,
                           codec=frame.codec, keyframe=frame.keyframe)
        out.data = uint8_field(frame.data)
        self._frames_pub.publish(out)
        if self.settings.publish_compressed and frame.kind != FrameKind.PROBE:
            self._publish_preview(out.header, frame)
        self._stats_pub.publish(self._stats(out, frame))

    def _publish_preview(self, header, frame: EdgeFrame) -> None:
        """The sent low-resolution image as JPEG (rviz, image_transport's compressed)."""
        if frame.codec == 'jpeg':
            data = frame.data  # what went up the link, as it went
        elif self._jpeg_pub.get_subscription_count() > 0 and frame.lowres is not None:
            # An H.264 frame is not viewable on its own: encode the same image as JPEG,
            # only while someone watches (~0.3 ms at 120x90).
            data = encode_jpeg(frame.lowres, PREVIEW_JPEG_QUALITY)
        else:
            return
        self._jpeg_pub.publish(compressed_msg(header, JPEG_FORMAT, data))

    def _stats(self, out: EncodedFrame, frame: EdgeFrame) -> PipelineStats:
        counts = self.pipeline.counts
        latency_ms = (self.get_clock().now().nanoseconds * 1e-9
                      - stamp_to_s(out.header.stamp)) * 1e3
        return PipelineStats(
            header=out.header, stage='edge', seq=out.seq, kind=out.kind,
            frames_in=self._frames_in, frames_key=counts.get(FrameKind.KEY, 0),
            frames_useful=counts.get(FrameKind.USEFUL, 0),
            frames_forced=counts.get(FrameKind.FORCED, 0),
            frames_skipped=counts.get(FrameKind.SKIP, 0), frames_rejected=self._rejected,
            bytes_total=self._bytes_total, frame_bytes=len(frame.data), width=frame.width,
            height=frame.height, encode_ms=frame.encode_ms, total_ms=frame.encode_ms,
            latency_ms=latency_ms)


def main(args=None) -> None:
    """Run the edge node until shut down."""
    run_node(lambda: autostart(EdgeNode()), args)


if __name__ == '__main__':
    main()
