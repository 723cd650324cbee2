"""Cloud side over real DDS: edge -> cloud -> masks; corrupt payloads; H.264 recovery.

The weights are tiny random-init networks (test/conftest.py's tiny_models): these tests check
plumbing (sizes, encodings, stamps, rejection), not accuracy.
"""
import itertools

import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Empty

from cloudseg_ros.core.codecs import FrameEncoder
from cloudseg_ros.core.mask_codec import decode_mask_png
from cloudseg_ros.core.receiver import MAX_SEQ_GAP
from cloudseg_ros.msg import EncodedFrame, PipelineStats
from cloudseg_ros.ros import qos
from cloudseg_ros.ros.conversions import image_msg_to_rgb

from conftest import SceneCamera, collect, moving_scene  # noqa: E402

torch = pytest.importorskip('torch')
CLOUD = 'cloudseg_ros.nodes.cloud_node'
EDGE = 'cloudseg_ros.nodes.edge_node'


@pytest.mark.parametrize('overlay_on_device', ['auto', 'always'])  # CPU: output threads / engine
def test_edge_to_cloud_masks_keep_size_encoding_and_stamp(launch, ros_node, spin_until,
                                                          tiny_models, overlay_on_device):
    cloud = launch(CLOUD, params={'robot_namespaces': ['/c1'], 'models_dir': tiny_models,
                                  'device': 'cpu', 'overlay_on_device': overlay_on_device})
    edge = launch(EDGE, namespace='/c1', params={'useful_threshold': 0.0, 'scale': 4})
    camera = SceneCamera(ros_node, '/c1')
    masks = collect(ros_node, '/c1/mask', Image, qos.IMAGE)
    colors = collect(ros_node, '/c1/mask_color', Image, qos.IMAGE)
    pngs = collect(ros_node, '/c1/mask/compressed', CompressedImage, qos.IMAGE)
    stats = collect(ros_node, '/c1/cloud_stats', PipelineStats, qos.STATS)

    def publish():
        camera.publish()
        # The PNG and the raw mask of one frame are separate topics: either may arrive first,
        # and so may the receive-side and the inference-side stats.
        return (len(masks) >= 2 and colors and _same_stamp(pngs, masks)
                and {s.stage for s in list(stats)} == {'cloud', 'cloud_rx'})

    assert spin_until(publish, 60.0), cloud.log() + edge.log()
    mask = masks[-1]
    assert (mask.width, mask.height, mask.encoding) == (480, 360, 'mono8')
    assert (mask.header.stamp.sec, mask.header.stamp.nanosec) in camera.sent
    assert mask.header.frame_id == 'cam'
    ids = np.frombuffer(mask.data, np.uint8)
    assert ids.max() < 11
    assert colors[-1].encoding == 'rgb8' and image_msg_to_rgb(colors[-1]).shape == (360, 480, 3)
    png, same = _same_stamp(pngs, masks)[0]
    assert 'png' in png.format
    assert np.array_equal(decode_mask_png(png.data),
                          np.frombuffer(same.data, np.uint8).reshape(360, 480))
    assert {s.stage for s in stats} == {'cloud', 'cloud_rx'}
    assert all(s.latency_ms > 0 for s in stats)


def _same_stamp(pngs, masks):
    """(PNG mask, raw mask) pairs of the same frame received so far."""
    return [(p, m) for p in list(pngs) for m in list(masks) if m.header.stamp == p.header.stamp]


SESSION = 0x5EED


def _encoded(seq, rgb, encoder, scale=4, data=None, kind=EncodedFrame.KIND_USEFUL):
    small = rgb[::scale, ::scale].copy()
    enc = encoder.encode(small, force_keyframe=False)
    msg = EncodedFrame(session_id=SESSION, seq=seq, kind=kind, orig_width=rgb.shape[1],
                       orig_height=rgb.shape[0], width=small.shape[1], height=small.shape[0],
                       scale=scale, codec=enc.codec, keyframe=enc.keyframe)
    msg.data = enc.data if data is None else data
    return msg


def test_corrupt_payload_rejected_then_next_frame_served(launch, ros_node, spin_until,
                                                         tiny_models):
    cloud = launch(CLOUD, params={'robot_namespaces': ['/c2'], 'models_dir': tiny_models,
                                  'device': 'cpu'})
    pub = ros_node.create_publisher(EncodedFrame, '/c2/frames', qos.ENCODED_STREAM)
    masks = collect(ros_node, '/c2/mask', Image, qos.IMAGE)
    stats = collect(ros_node, '/c2/cloud_stats', PipelineStats, qos.STATS)
    jpeg = FrameEncoder('jpeg')
    seq = 0

    def send(**kwargs):
        nonlocal seq
        seq += 1
        pub.publish(_encoded(seq, moving_scene(seq), jpeg, **kwargs))

    assert spin_until(lambda: send() or bool(masks), 60.0), cloud.log()
    send(data=b'\xff\xd8 not a jpeg at all')
    spin_until(lambda: False, 0.3)
    masks.clear()
    assert spin_until(lambda: send() or bool(masks), 20.0), cloud.log()
    assert cloud.alive()
    assert spin_until(lambda: stats and stats[-1].frames_rejected >= 1, 5.0), cloud.log()
    assert 'frame rejected' in cloud.log()


def test_h264_loss_asks_for_keyframe(launch, ros_node, spin_until, tiny_models):
    cloud = launch(CLOUD, params={'robot_namespaces': ['/c3'], 'models_dir': tiny_models,
                                  'device': 'cpu'})
    pub = ros_node.create_publisher(EncodedFrame, '/c3/frames', qos.ENCODED_STREAM)
    requests = collect(ros_node, '/c3/keyframe_request', Empty, qos.STATS)
    masks = collect(ros_node, '/c3/mask', Image, qos.IMAGE)
    h264 = FrameEncoder('h264')
    frames = [_encoded(i + 1, moving_scene(i), h264) for i in range(40)]
    assert frames[0].keyframe and not frames[1].keyframe
    assert spin_until(lambda: pub.get_subscription_count() > 0, 30.0), cloud.log()
    # Join mid-stream (no IDR yet): the cloud must ask for a key frame.
    index = itertools.cycle(range(1, 40))
    assert spin_until(lambda: pub.publish(frames[next(index)]) or bool(requests), 30.0), \
        cloud.log()
    assert not masks
    assert 'waiting for a key frame' in cloud.log()


def test_single_hostile_frames_do_not_stop_the_cloud(launch, ros_node, spin_until,
                                                     tiny_models):
    """seq = 2^64-1, an 8192x8192 claim, a probe whose twin has another size: all survived."""
    cloud = launch(CLOUD, params={'robot_namespaces': ['/c4'], 'models_dir': tiny_models,
                                  'device': 'cpu'})
    pub = ros_node.create_publisher(EncodedFrame, '/c4/frames', qos.ENCODED_STREAM)
    masks = collect(ros_node, '/c4/mask', Image, qos.IMAGE)
    stats = collect(ros_node, '/c4/cloud_stats', PipelineStats, qos.STATS)
    jpeg = FrameEncoder('jpeg')
    seqs = itertools.count(1)

    def frame(**kwargs):
        seq = next(seqs)
        return _encoded(seq, moving_scene(seq), jpeg, **kwargs)

    assert spin_until(lambda: pub.publish(frame()) or bool(masks), 60.0), cloud.log()
    # The top sequence number twice, ordinary frames between: the loss counter used to overflow
    # its uint64 field, and publishing the stats then ended the process.
    for _ in range(2):
        top = frame()
        top.seq = 2 ** 64 - 1
        pub.publish(top)
        pub.publish(frame())
    # 8192x8192 declared from a 2048x2048 payload: refused before anything is allocated.
    big = frame()
    big.width, big.height, big.orig_width, big.orig_height = 2048, 2048, 8192, 8192
    pub.publish(big)
    # A 480x360 frame, segmented; then a 640x480 full-resolution probe with the same stamp.
    twin = frame()
    twin.header.stamp = ros_node.get_clock().now().to_msg()
    pub.publish(twin)
    assert spin_until(lambda: any(m.header.stamp == twin.header.stamp for m in masks), 20.0), \
        cloud.log()
    probe = _encoded(next(seqs), np.full((480, 640, 3), 90, np.uint8), jpeg, scale=1,
                     kind=EncodedFrame.KIND_PROBE)
    probe.header.stamp = twin.header.stamp
    pub.publish(probe)
    assert spin_until(lambda: any(s.kind == EncodedFrame.KIND_PROBE for s in stats), 10.0), \
        cloud.log()
    # Still serving: the next good frames are segmented, and the counters are sane (rejected:
    # the 8192x8192 claim and the probe; errors are logged at most every 2 s).
    masks.clear()
    assert spin_until(lambda: pub.publish(frame()) or bool(masks), 20.0), cloud.log()
    assert cloud.alive()
    assert spin_until(lambda: stats[-1].frames_rejected >= 2, 5.0), cloud.log()
    assert stats[-1].frames_lost <= 4 * MAX_SEQ_GAP
    assert 'exceeds max_input_pixels' in cloud.log()


@pytest.mark.parametrize('module', [CLOUD, EDGE])
def test_a_parameter_of_the_wrong_type_at_start_is_the_one_error_shown(launch, module):
    """The node exits naming the parameter; no second traceback from releasing a half-built
    node (release() used to read attributes that construction never reached)."""
    node = launch(module, params={'publish_compressed' if module == CLOUD else 'scale': 'abc'})
    node.proc.wait(timeout=60)
    log = node.log()
    assert node.proc.returncode != 0
    assert 'InvalidParameterTypeException' in log, log
    assert 'AttributeError' not in log, log
