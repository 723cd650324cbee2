"""The cloud serving a fleet over DDS: robots join and leave at run time, and one robot's bad
frames never cost another robot its masks, even inside one batch.

Networks are tiny random-init ones (test/conftest.py): these tests check who is served.
"""
import itertools

import numpy as np
import pytest
from sensor_msgs.msg import Image

from cloudseg_ros.core.codecs import FrameEncoder
from cloudseg_ros.msg import EncodedFrame, PipelineStats
from cloudseg_ros.ros import qos
from cloudseg_ros.ros.param_client import RemoteParams
from cloudseg_ros.tools.demo import wait_for_cloud

torch = pytest.importorskip('torch')
CLOUD = 'cloudseg_ros.nodes.cloud_node'
SIZE = (96, 72)  # (W, H): divisible by 3 and 4


class FakeRobot:
    """Publishes JPEG EncodedFrames on <ns>/frames and collects <ns>/mask."""

    def __init__(self, node, namespace, scale=4):
        self.pub = node.create_publisher(EncodedFrame, f'{namespace}/frames',
                                         qos.ENCODED_STREAM)
        self.masks, self.stats = [], []
        node.create_subscription(Image, f'{namespace}/mask', self.masks.append, qos.SENSOR)
        node.create_subscription(PipelineStats, f'{namespace}/cloud_stats', self.stats.append,
                                 qos.STATS)
        self.node, self.scale, self.seq = node, scale, itertools.count(1)
        self.jpeg = FrameEncoder('jpeg')

    def send(self):
        seq = next(self.seq)
        width, height = SIZE
        small = np.full((height // self.scale, width // self.scale, 3), seq % 256, np.uint8)
        msg = EncodedFrame(session_id=7, seq=seq, kind=EncodedFrame.KIND_USEFUL,
                           orig_width=width, orig_height=height, width=small.shape[1],
                           height=small.shape[0], scale=self.scale, codec='jpeg',
                           keyframe=True)
        msg.header.stamp = self.node.get_clock().now().to_msg()
        msg.data = self.jpeg.encode(small).data
        self.pub.publish(msg)


def stream(robots, spin_until, predicate, timeout_s):
    """Every robot sends a frame every ~50 ms until predicate() holds."""
    def step():
        for robot in robots:
            robot.send()
        spin_until(lambda: False, 0.05)
        return predicate()
    return spin_until(step, timeout_s)


def _set(params, value):
    return params.set_and_wait({'robot_namespaces': value}, 10.0)[0]


def test_robots_join_and_leave_at_run_time(launch, ros_node, spin_until, tiny_models):
    cloud = launch(CLOUD, params={'robot_namespaces': ['/j1'], 'models_dir': tiny_models,
                                  'device': 'cpu', 'warmup_width': SIZE[0],
                                  'warmup_height': SIZE[1]})
    assert wait_for_cloud(ros_node, cloud, '', 60.0), cloud.log()
    params = RemoteParams(ros_node, '/cloud')
    j1, j2 = FakeRobot(ros_node, '/j1'), FakeRobot(ros_node, '/j2')
    assert stream([j1, j2], spin_until, lambda: len(j1.masks) >= 3, 30.0), cloud.log()
    assert not j2.masks  # not in the list: not served

    assert _set(params, ['/j1', '/j2']).successful
    assert stream([j1, j2], spin_until, lambda: len(j2.masks) >= 3, 30.0), cloud.log()

    # Malformed lists are refused with a reason and change nothing.
    for bad, reason in ((['/j1', '/j1'], 'twice'), (['/j 1'], 'not a valid')):
        result = _set(params, bad)
        assert not result.successful and reason in result.reason
    assert params.get_and_wait(['robot_namespaces'])['robot_namespaces'] == ['/j1', '/j2']

    assert _set(params, ['/j2']).successful  # j1 leaves
    stream([j1, j2], spin_until, lambda: False, 1.0)  # frames in flight drain
    j1.masks.clear()
    j2.masks.clear()
    assert stream([j1, j2], spin_until, lambda: len(j2.masks) >= 5, 30.0), cloud.log()
    assert not j1.masks
    assert 'robot left' in cloud.log()
    assert cloud.alive()


def test_a_bad_robot_does_not_cost_another_its_masks(launch, ros_node, spin_until,
                                                     tiny_models):
    # A long batch deadline puts both robots' frames in the same batch.
    cloud = launch(CLOUD, params={'robot_namespaces': ['/g1', '/g2'],
                                  'models_dir': tiny_models, 'device': 'cpu',
                                  'max_batch_wait_ms': 200.0, 'warmup_width': SIZE[0],
                                  'warmup_height': SIZE[1]})
    assert wait_for_cloud(ros_node, cloud, '', 60.0), cloud.log()
    bad = FakeRobot(ros_node, '/g1', scale=3)  # the tiny models have no x3 network
    good = FakeRobot(ros_node, '/g2', scale=4)
    assert stream([bad, good], spin_until, lambda: len(good.masks) >= 10, 60.0), cloud.log()
    assert not bad.masks
    assert 'no SR model for x3' in cloud.log()
    # Batched with the bad frames, the good robot's frames were never rejected.
    assert spin_until(lambda: bad.stats and bad.stats[-1].frames_rejected >= 5, 10.0)
    assert good.stats and max(s.frames_rejected for s in good.stats) == 0
    assert max(s.batch_size for s in good.stats) == 2, 'never batched with the bad robot'


def test_two_engines_share_the_robots(launch, ros_node, spin_until, tiny_models):
    """device 'cpu,cpu': one engine per device, robots spread over both, all served."""
    names = [f'/e{i}' for i in range(4)]
    cloud = launch(CLOUD, params={'robot_namespaces': names, 'models_dir': tiny_models,
                                  'device': 'cpu,cpu', 'warmup_width': SIZE[0],
                                  'warmup_height': SIZE[1]})
    assert wait_for_cloud(ros_node, cloud, '', 90.0), cloud.log()
    robots = [FakeRobot(ros_node, name) for name in names]
    assert stream(robots, spin_until, lambda: all(len(r.masks) >= 3 for r in robots), 60.0), \
        cloud.log()
    log = cloud.log()
    assert '2 engine(s) on cpu,cpu' in log
    assert '-> 0:cpu' in log and '-> 1:cpu' in log, log
