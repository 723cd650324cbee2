"""Robot side over real DDS: replay -> edge -> a subscriber, live parameters, bad input.

The replay camera plays the bundled demo clip (480x360, from CamVid val), so nothing here needs
the CamVid data set.
"""
import os

import numpy as np
import pytest
import yaml
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Empty, Header

from cloudseg_ros.core.codecs import FrameDecoder, decode_jpeg, encode_jpeg
from cloudseg_ros.msg import EncodedFrame, PipelineStats
from cloudseg_ros.nodes.edge_node import DIAGNOSTICS_PARAMS, PARAMS, UPLINK_PARAMS
from cloudseg_ros.ros.lifecycle import LIFECYCLE_PARAMS
from cloudseg_ros.ros import qos
from cloudseg_ros.ros.param_client import RemoteParams

from conftest import REPO, collect, moving_scene

CLIP = os.path.join(REPO, 'data', 'demo', 'camvid_val_15fps.mp4')
EDGE = 'cloudseg_ros.nodes.edge_node'
REPLAY = 'cloudseg_ros.nodes.camera_replay_node'


def test_replay_edge_frames_decode_and_scale_changes_live(launch, ros_node, spin_until):
    launch(REPLAY, namespace='/r1', params={'source': CLIP,
                                            'rate_hz': 15.0})
    edge = launch(EDGE, namespace='/r1', params={'scale': 2, 'useful_threshold': 0.0,
                                                 'max_rate_hz': 30.0})
    frames = collect(ros_node, '/r1/frames', EncodedFrame, qos.SENSOR)
    jpegs = collect(ros_node, '/r1/image_lowres/compressed', CompressedImage, qos.SENSOR)
    stats = collect(ros_node, '/r1/edge_stats', PipelineStats, qos.STATS)
    assert spin_until(lambda: len(frames) >= 3 and jpegs and stats, 30.0), edge.log()

    decoder = FrameDecoder()
    first = frames[0]
    assert (first.orig_width, first.orig_height, first.scale) == (480, 360, 2)
    assert first.session_id != 0 and {f.session_id for f in frames} == {first.session_id}
    rgb = decoder.decode(first.codec, bytes(first.data), first.width, first.height)
    assert rgb.shape == (180, 240, 3)
    assert 'jpeg' in jpegs[0].format
    assert stats[-1].stage == 'edge' and stats[-1].bytes_total > 0

    params = RemoteParams(ros_node, '/r1/edge')
    assert params.wait_ready(10.0)
    results = params.set_and_wait({'scale': 4})
    assert results[0].successful, results[0].reason
    frames.clear()
    assert spin_until(lambda: len(frames) >= 2, 10.0), edge.log()
    # The next frame after the change is already at the new scale (at most one in flight).
    assert frames[-1].scale == 4 and (frames[-1].width, frames[-1].height) == (120, 90)
    rescaled = [f for f in frames if f.scale == 4]
    assert rescaled[0].kind == EncodedFrame.KIND_KEY  # new geometry starts with a key frame
    assert params.get_and_wait(['scale'])['scale'] == 4


def test_invalid_parameters_are_refused_with_reason(launch, ros_node):
    edge = launch(EDGE, namespace='/r2')
    params = RemoteParams(ros_node, '/r2/edge')
    assert params.wait_ready(10.0), edge.log()
    out_of_range = params.set_and_wait({'scale': 7})[0]
    assert not out_of_range.successful
    bad_codec = params.set_and_wait({'codec': 'vp9'})[0]
    assert not bad_codec.successful and 'vp9' in bad_codec.reason
    crossed = params.set_and_wait({'useful_threshold': 0.5, 'key_threshold': 0.1})[0]
    assert not crossed.successful and crossed.reason
    too_slow = params.set_and_wait({'h264_preset': 'placebo'})[0]  # CPU: bounded to medium
    assert not too_slow.successful and 'placebo' in too_slow.reason
    assert params.get_and_wait(['scale', 'codec', 'h264_preset']) == {
        'scale': 4, 'codec': 'jpeg', 'h264_preset': 'veryfast'}
    assert params.set_and_wait({'h264_preset': 'superfast'})[0].successful  # live
    assert edge.alive()


def test_clock_source_transport_and_stream_stopping_values_are_refused_live(launch, ros_node):
    # use_sim_time is honoured when given at start, and fixed from then on (issue 12).
    edge = launch(EDGE, namespace='/r5', params={'use_sim_time': True})
    params = RemoteParams(ros_node, '/r5/edge')
    assert params.wait_ready(10.0), edge.log()
    sim = params.set_and_wait({'use_sim_time': False})[0]
    assert not sim.successful and 'use_sim_time' in sim.reason
    slow = params.set_and_wait({'max_rate_hz': 0.1})[0]  # stopped the stream before the guard
    assert not slow.successful and 'min_rate_hz' in slow.reason
    rare = params.set_and_wait({'max_interval_s': 60.0})[0]
    assert not rare.successful and 'max_interval_cap_s' in rare.reason
    for name, value in (('min_rate_hz', 0.1), ('max_interval_cap_s', 60.0),
                        ('uplink_transport', 'zenoh')):
        assert not params.set_and_wait({name: value})[0].successful, name  # read-only
    assert params.get_and_wait(['use_sim_time', 'max_rate_hz', 'max_interval_s',
                                'uplink_transport']) == {
        'use_sim_time': True, 'max_rate_hz': 15.0, 'max_interval_s': 2.0,
        'uplink_transport': 'dds'}
    assert params.set_and_wait({'max_rate_hz': 5.0})[0].successful  # within the guard: live
    assert edge.alive()


def test_shipped_params_file_matches_declared_defaults(launch, ros_node):
    path = os.path.join(REPO, 'config', 'robot.yaml')
    with open(path) as f:
        listed = yaml.safe_load(f)['/**/edge']['ros__parameters']
    specs = PARAMS + UPLINK_PARAMS + DIAGNOSTICS_PARAMS + LIFECYCLE_PARAMS
    assert listed == {spec.name: spec.default for spec in specs}
    edge = launch(EDGE, namespace='/r4', params_file=path)
    params = RemoteParams(ros_node, '/r4/edge')
    assert params.wait_ready(10.0), edge.log()
    assert params.get_and_wait(list(listed)) == listed


def _image(header, width, height, encoding='rgb8', data=None):
    msg = Image(header=header, width=width, height=height, encoding=encoding,
                step=width * 3)
    msg.data = data if data is not None else np.random.randint(
        0, 255, (height, width, 3), dtype=np.uint8).tobytes()
    return msg


def test_bad_images_are_rejected_and_node_keeps_running(launch, ros_node, spin_until):
    edge = launch(EDGE, namespace='/r3', params={'codec': 'h264', 'scale': 2,
                                                 'useful_threshold': 0.0, 'max_rate_hz': 60.0})
    pub = ros_node.create_publisher(Image, '/r3/image_raw', qos.SENSOR)
    frames = collect(ros_node, '/r3/frames', EncodedFrame, qos.SENSOR)
    stats = collect(ros_node, '/r3/edge_stats', PipelineStats, qos.STATS)

    def publish_good_until(count):
        def step():
            stamp = ros_node.get_clock().now().to_msg()
            pub.publish(_image(Header(stamp=stamp, frame_id='cam'), 160, 120))
            return len(frames) >= count
        return spin_until(step, 15.0)

    # A good frame first, so the link is known to be up before the bad ones are sent.
    assert publish_good_until(1), edge.log()
    bad = [
        _image(Header(), 64, 48, encoding='32FC1'),
        _image(Header(), 64, 48, data=b'\x00' * 10),   # truncated
        _image(Header(), 0, 0, data=b''),                # empty
    ]
    for msg in bad:
        pub.publish(msg)
        spin_until(lambda: False, 0.1)
    assert publish_good_until(len(frames) + 2), edge.log()
    assert edge.alive()
    assert spin_until(lambda: stats and stats[-1].frames_rejected == 3, 5.0), edge.log()
    assert 'frame rejected' in edge.log()
    # Decode as a receiver would, from a key frame: the stream's first IDR can go out before
    # this best-effort subscription is matched, and a receiver that missed it asks for one.
    requests = ros_node.create_publisher(Empty, '/r3/keyframe_request', qos.STATS)

    def key_frame_received():
        if not any(f.keyframe for f in frames):
            requests.publish(Empty())
            pub.publish(_image(Header(stamp=ros_node.get_clock().now().to_msg()), 160, 120))
        return any(f.keyframe for f in frames)

    assert spin_until(key_frame_received, 10.0), edge.log()
    key = next(f for f in frames if f.keyframe)
    rgb = FrameDecoder().decode('h264', bytes(key.data), key.width, key.height)
    assert rgb.shape == (60, 80, 3)


def test_compressed_transport_reads_the_compressed_camera_topic(launch, ros_node, spin_until):
    edge = launch(EDGE, namespace='/r5', params={'transport': 'compressed', 'scale': 2,
                                                 'useful_threshold': 0.0, 'max_rate_hz': 60.0})
    pub = ros_node.create_publisher(CompressedImage, '/r5/image_raw/compressed', qos.IMAGE)
    frames = collect(ros_node, '/r5/frames', EncodedFrame, qos.SENSOR)
    t = 0

    def publish():
        nonlocal t
        t += 1
        msg = CompressedImage(header=Header(stamp=ros_node.get_clock().now().to_msg()),
                              format='rgb8; jpeg compressed bgr8')
        msg.data = encode_jpeg(moving_scene(t, 160, 120))
        pub.publish(msg)
        return len(frames) >= 2

    assert spin_until(publish, 30.0), edge.log()
    assert (frames[-1].orig_width, frames[-1].orig_height) == (160, 120)
    assert (frames[-1].width, frames[-1].height) == (80, 60)


@pytest.mark.parametrize('encoding', ['bgr8', 'mono16', 'yuv422_yuy2', 'bayer_rggb8'])
def test_camera_encodings_reach_the_uplink(launch, ros_node, spin_until, encoding):
    """One case per family of encodings: over DDS each one is converted and sent."""
    namespace = '/r6_' + encoding
    edge = launch(EDGE, namespace=namespace, params={'useful_threshold': 0.0, 'scale': 2,
                                                     'max_rate_hz': 60.0})
    pub = ros_node.create_publisher(Image, namespace + '/image_raw', qos.IMAGE)
    frames = collect(ros_node, namespace + '/frames', EncodedFrame, qos.SENSOR)
    bytes_per_pixel = {'bgr8': 3, 'mono16': 2, 'yuv422_yuy2': 2, 'bayer_rggb8': 1}[encoding]
    t = 0

    def publish():
        nonlocal t
        t += 1
        msg = Image(header=Header(stamp=ros_node.get_clock().now().to_msg()), width=160,
                    height=120, encoding=encoding, step=160 * bytes_per_pixel)
        msg.data = moving_scene(t, 160, 120)[:, :, :bytes_per_pixel].tobytes()
        pub.publish(msg)
        return len(frames) >= 2

    assert spin_until(publish, 30.0), edge.log()
    assert (frames[-1].orig_width, frames[-1].orig_height, frames[-1].scale) == (160, 120, 2)
    assert 'frame rejected' not in edge.log()


def test_h264_uplink_still_previews_jpeg_for_rviz(launch, ros_node, spin_until):
    edge = launch(EDGE, namespace='/r7', params={'codec': 'h264', 'scale': 2,
                                                 'useful_threshold': 0.0, 'max_rate_hz': 60.0})
    pub = ros_node.create_publisher(Image, '/r7/image_raw', qos.IMAGE)
    previews = collect(ros_node, '/r7/image_lowres/compressed', CompressedImage, qos.IMAGE)
    frames = collect(ros_node, '/r7/frames', EncodedFrame, qos.SENSOR)
    t = 0

    def publish():
        nonlocal t
        t += 1
        pub.publish(_image(Header(stamp=ros_node.get_clock().now().to_msg()), 160, 120,
                           data=moving_scene(t, 160, 120).tobytes()))
        return previews and frames

    assert spin_until(publish, 30.0), edge.log()
    assert frames[-1].codec == 'h264' and 'jpeg' in previews[-1].format
    assert decode_jpeg(bytes(previews[-1].data)).shape == (60, 80, 3)
