"""The cloud node's parameters: descriptors (units, ranges) and the live-tunable settings."""
from dataclasses import dataclass
import re
from typing import List, Sequence, Tuple

from cloudseg_ros.core.receiver import ReceiveLimits
from cloudseg_ros.inference import model_files
from cloudseg_ros.inference.engine import ALL_SCALES, EngineConfig
from cloudseg_ros.inference.overlay import OVERLAY_MODES
from cloudseg_ros.ros.params import ParamSpec

LIMITS = ReceiveLimits()  # defaults of the resource bounds
KEYFRAME_REQUEST_PERIOD_S = 0.5  # do not flood the uplink with requests
MAX_BATCH_PIXELS = 8 * 1920 * 1080  # a full batch of 1080p frames
MAX_ROBOTS = 256
# A pool name: one ROS name token (it ends the heartbeat topic's name).
_POOL_NAME = re.compile(r'[A-Za-z_][A-Za-z0-9_]*')
# A ROS namespace: optional leading '/', then name tokens (letter or '_' first) joined by '/'.
_NAMESPACE = re.compile(r'/?[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*')
PARAMS = (
    ParamSpec('robot_namespaces', [''],
              "Namespaces of the robots served ('' = this node's); live: robots join and leave "
              'when it is set.'),
    ParamSpec('max_robots', MAX_ROBOTS,
              'Most robots robot_namespaces may list (bounds subscriptions and memory).',
              1, 4096, read_only=True),
    ParamSpec('server_pool', '',
              "Name of a pool of cloud servers sharing robot_namespaces (the same list on "
              "every server; each serves its share, a lost server's robots move within "
              "server_pool_lease_s + ~1 s: docs/SCALING.md); '' = serve every robot listed.",
              read_only=True),
    ParamSpec('server_pool_lease_s', 2.0,
              'Seconds without a heartbeat after which a pool server is taken as lost.',
              0.5, 60.0, read_only=True),
    ParamSpec('models_dir', '', "Folder of the weights ('' = the package's models/); a "
              "seg_icnet_x{S}.pt there (cloudseg adapt) segments the frames sent at scale S "
              "(with sr_variant aware and no seg_model).",
              read_only=True),
    ParamSpec('seg_model', '',
              'Segmentation model file: our ICNet checkpoint, or a TorchScript / torch.export '
              "(.pt2) network with its YAML beside it ('' = models_dir/seg_icnet.pt).",
              read_only=True),
    ParamSpec('sr_variant', 'aware', 'Super-resolution weights.',
              choices=model_files.SR_VARIANTS, read_only=True),
    ParamSpec('device', 'auto',
              "Torch device: 'auto' (CUDA if present), 'cpu', 'cuda:N'; or a comma-separated "
              "list ('cuda:0,cuda:1'): one engine per entry, robots spread evenly over them; "
              "repeat a GPU for several engines on it ('cuda,cuda,cuda': 3 per H200 met the "
              "fleet targets, docs/FLEET.md).",
              read_only=True),
    ParamSpec('precision', 'auto', 'auto (bf16 on GPU, fp32 on CPU), bf16, fp16 or fp32.',
              choices=('auto', 'bf16', 'fp16', 'fp32'), read_only=True),
    ParamSpec('cuda_graphs', False, 'Capture CUDA graphs per input shape (GPU only).',
              read_only=True),
    ParamSpec('overlay_on_device', 'auto',
              'Where mask_color is blended: on the engine\'s device (auto = on a GPU, where '
              'the frame and mask already are) or by OpenCV on the output threads.',
              choices=OVERLAY_MODES, read_only=True),
    ParamSpec('compile', False,
              'torch.compile the networks (GPU; about 20 s per new frame size, paid at start '
              'for warmup_width x warmup_height).', read_only=True),
    ParamSpec('warmup_width', 480, 'Width of the warm-up frames (the cameras), pixels.',
              16, 8192, read_only=True),
    ParamSpec('warmup_height', 360, 'Height of the warm-up frames, pixels.', 16, 8192,
              read_only=True),
    ParamSpec('warmup_scales', [1, 2, 3, 4],
              'Uplink scale factors (1..4) warmed up (compiled, captured) at start; others are '
              'at their first frame.', read_only=True),
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
              "Feed the received LR frame to ICNet's low-resolution branch (paper 3.2); live "
              'from the next batch, also with cuda_graphs (graphs are keyed by it: the first '
              'batch of each shape after a change is captured again).'),
    ParamSpec('max_batch', 8, 'Most frames (of different robots) segmented together.', 1, 64),
    ParamSpec('max_batch_wait_ms', 5.0,
              'Longest wait, ms, after a frame arrives for other robots\' frames to batch with '
              'it (0 = segment what is waiting at once).', 0.0, 1000.0),
    ParamSpec('decode_threads', 2, 'Threads decoding received frames (each robot in order).',
              1, 64, read_only=True),
    ParamSpec('max_decode_backlog', 4,
              'Frames per robot waiting for a decoding thread; more are dropped and counted.',
              1, 64, read_only=True),
    ParamSpec('output_threads', 2,
              'Threads building mask_color and mask/compressed (only when subscribed).', 1, 64,
              read_only=True),
    ParamSpec('publish_color', True, 'Publish mask_color (rgb8 overlay for rviz).'),
    ParamSpec('publish_compressed', True, 'Publish mask/compressed (PNG) for the downlink.'),
    ParamSpec('overlay_alpha', 0.5, 'Opacity of the class colours in mask_color (0..1).',
              0.0, 1.0),
)


@dataclass(frozen=True)
class CloudSettings:
    """The live-tunable part of the parameters."""

    pyramid_reuse: bool
    max_batch: int
    publish_color: bool
    publish_compressed: bool
    overlay_alpha: float
    robot_namespaces: Tuple[str, ...] = ('',)
    max_batch_wait_ms: float = 5.0

    @staticmethod
    def from_values(values) -> 'CloudSettings':
        """Build from {parameter: value}; ValueError names a bad robot namespace list."""
        check_server_pool(values)
        return CloudSettings(bool(values['pyramid_reuse']), int(values['max_batch']),
                             bool(values['publish_color']), bool(values['publish_compressed']),
                             float(values['overlay_alpha']),
                             check_namespaces(values['robot_namespaces'], values['max_robots']),
                             float(values['max_batch_wait_ms']))


def engine_configs(values, settings: CloudSettings) -> List[EngineConfig]:
    """One engine configuration per device listed in `device` (comma-separated)."""
    models_dir = values['models_dir'] or model_files.default_models_dir()
    return [EngineConfig(
        seg_checkpoint=values['seg_model'] or model_files.seg_checkpoint(models_dir),
        sr_checkpoints=model_files.sr_checkpoints(models_dir, values['sr_variant']),
        seg_scale_checkpoints=model_files.seg_scale_checkpoints(
            models_dir, values['seg_model'], values['sr_variant']),
        sr_mode='bilinear' if values['sr_variant'] == 'bilinear' else 'model',
        device=device.strip(), precision=values['precision'],
        pyramid_reuse=settings.pyramid_reuse, cuda_graphs=values['cuda_graphs'],
        compile=values['compile'], overlay=values['overlay_on_device'],
        warmup_size=(values['warmup_width'], values['warmup_height']),
        warmup_batches=tuple(range(1, settings.max_batch + 1)),
        warmup_scales=check_warmup_scales(values['warmup_scales']))
        for device in values['device'].split(',')]


def check_warmup_scales(scales: Sequence[int]) -> Tuple[int, ...]:
    """The scales to warm up as a tuple; ValueError for one outside 1..4 (silently unused)."""
    bad = [s for s in scales if s not in ALL_SCALES]
    if bad:
        raise ValueError(f'warmup_scales: {bad} not in {list(ALL_SCALES)}')
    return tuple(scales)


def check_namespaces(names: Sequence[str], max_robots: int) -> Tuple[str, ...]:
    """Return the robot namespaces as a tuple; ValueError if one is malformed or repeated.

    '' is the node's own namespace; a trailing '/' is tolerated and dropped.
    """
    if isinstance(names, str):
        raise ValueError('robot_namespaces must be a list of strings')
    if len(names) > max_robots:
        raise ValueError(f'robot_namespaces lists {len(names)} robots, more than '
                         f'max_robots={max_robots}')
    cleaned = []
    for name in names:
        name = name if name in ('', '/') else name.rstrip('/')
        if name not in ('', '/') and not _NAMESPACE.fullmatch(name):
            raise ValueError(f'robot namespace {name[:80]!r} is not a valid ROS namespace')
        if name in cleaned:
            raise ValueError(f'robot namespace {name!r} is listed twice')
        cleaned.append(name)
    return tuple(cleaned)


def check_server_pool(values) -> None:
    """ValueError for a pool name that is not one ROS name token, or a pool over zenoh."""
    name = values['server_pool']
    if not name:
        return
    if not _POOL_NAME.fullmatch(name):
        raise ValueError(f'server_pool {name[:80]!r} is not one ROS name token '
                         '([A-Za-z_][A-Za-z0-9_]*)')
    if values.get('uplink_transport', 'dds') != 'dds':
        raise ValueError('server_pool needs uplink_transport dds (the zenoh router\'s access '
                         'rules name the robots served at start)')
