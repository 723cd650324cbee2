"""Robot side with HD cameras: delivery through the robot's DDS profile, bounded memory.

The camera is a separate process (`hd_camera.py`) publishing rgb8 images at 30 fps; the edge
and the camera use config/fastdds_robot.xml, as robot.launch.py and `cloudseg demo` set it.
Without that file the edge received 4 of 90 images at 1280x720 and 1920x1080 (and 1 of 90 at
640x480) on the 2-core test host; with it 85-90 of 90.
"""
import os

import pytest

from cloudseg_ros.msg import PipelineStats
from cloudseg_ros.ros import qos
from cloudseg_ros.tools.processes import robot_dds_env

from conftest import REPO

EDGE = 'cloudseg_ros.nodes.edge_node'
CAMERA = 'hd_camera'
HERE = os.path.join(REPO, 'test', 'ros')
# Every image goes out, so edge_stats reports frames_in after each one.
SEND_ALL = {'useful_threshold': 0.0, 'max_rate_hz': 120.0}
IMAGE_MB = 8192 * 8192 * 3 / 2 ** 20
# Measured 0.94-1.0 at 1920x1080 on the 2-core host, 0.64 with a soak run and two other test
# suites beside it (the edge then drops stale frames: it keeps the newest, by design). Without
# the profile 0.01-0.04 arrive, so 0.5 still tells a working profile from a broken one.
MIN_DELIVERED = 0.5


@pytest.fixture
def robot_env():
    """The robot's DDS profile, and test/ros on the path for the camera module."""
    env = {'FASTDDS_DEFAULT_PROFILES_FILE': os.path.join(REPO, 'config', 'fastdds_robot.xml'),
           'RMW_FASTRTPS_USE_QOS_FROM_XML': '1'}
    assert set(env) <= {'FASTDDS_DEFAULT_PROFILES_FILE', 'RMW_FASTRTPS_USE_QOS_FROM_XML'}
    assert robot_dds_env() in ({}, env)
    env['PYTHONPATH'] = HERE + os.pathsep + os.environ.get('PYTHONPATH', '')
    return env


def _frames_in(stats):
    return max((s.frames_in for s in stats), default=0)


def _run_camera(launch, spin_until, env, namespace, width, height, count, rate_hz=30.0):
    camera = launch(CAMERA, namespace=namespace, env=env, params={
        'width': width, 'height': height, 'count': count, 'rate_hz': rate_hz})
    assert spin_until(lambda: not camera.alive(), 30.0 + count / rate_hz), camera.log()
    assert f'published {count} in' in camera.log(), camera.log()
    return camera


def _rss_anon_mb(pid):
    """Private resident memory (the heap), without the cameras' shared-memory segments."""
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            if line.startswith('RssAnon:'):
                return int(line.split()[1]) / 1024
    raise AssertionError('no RssAnon')


def test_edge_receives_hd_rgb8_at_30fps(launch, ros_node, spin_until, robot_env):
    edge = launch(EDGE, namespace='/hd1', params=SEND_ALL, env=robot_env)
    stats = []
    ros_node.create_subscription(PipelineStats, '/hd1/edge_stats', stats.append, qos.STATS)
    count = 90  # 3 s at 30 fps
    for width, height in ((1280, 720), (1920, 1080)):
        before = _frames_in(stats)
        _run_camera(launch, spin_until, robot_env, '/hd1', width, height, count)
        spin_until(lambda: False, 1.0)  # the last stats
        delivered = _frames_in(stats) - before
        assert delivered >= MIN_DELIVERED * count, (width, height, delivered, edge.log())
        assert (stats[-1].width, stats[-1].height) == (width // 4, height // 4)
    assert edge.alive()


def test_image_over_max_input_pixels_is_refused_with_reason(launch, spin_until, robot_env):
    edge = launch(EDGE, namespace='/hd2', env=robot_env,
                  params=dict(SEND_ALL, max_input_pixels=640 * 480))
    _run_camera(launch, spin_until, robot_env, '/hd2', 1280, 720, 10, rate_hz=10.0)
    assert spin_until(lambda: 'exceeds the 307200 pixel limit' in edge.log(), 5.0), edge.log()
    assert edge.alive()


def test_huge_image_leaves_no_memory_behind(launch, ros_node, spin_until, robot_env):
    edge = launch(EDGE, namespace='/hd3', params=SEND_ALL, env=robot_env)
    stats = []
    ros_node.create_subscription(PipelineStats, '/hd3/edge_stats', stats.append, qos.STATS)
    _run_camera(launch, spin_until, robot_env, '/hd3', 1280, 720, 30)
    assert spin_until(lambda: _frames_in(stats) > 0, 5.0), edge.log()
    baseline_mb = _rss_anon_mb(edge.proc.pid)
    # One 8192x8192 rgb8 image (201 MB), over the default max_input_pixels (3840x2160).
    _run_camera(launch, spin_until, robot_env, '/hd3', 8192, 8192, 2, rate_hz=1.0)
    before = _frames_in(stats)
    _run_camera(launch, spin_until, robot_env, '/hd3', 1280, 720, 30)
    assert spin_until(lambda: _frames_in(stats) > before, 5.0), edge.log()
    after_mb = _rss_anon_mb(edge.proc.pid)
    # Less than the image stays: measured +113 MB with this file (the image did not reach the
    # callback: Fast DDS keeps part of the reassembly memory), +224 MB for good without DYNAMIC
    # reader buffers when the image was delivered and refused.
    assert after_mb < baseline_mb + IMAGE_MB, (baseline_mb, after_mb, edge.log())
    assert edge.alive()
