"""Edge and cloud under use_sim_time without a /clock, and the cloud's per-robot rate limit.

Both nodes warn that no /clock has come and keep serving on the steady clock (before, the
cloud published 0.05 masks/s); frames above max_frame_rate_hz are dropped and counted.
"""
from dataclasses import asdict

import numpy as np
import pytest
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from cloudseg_ros.msg import PipelineStats
from cloudseg_ros.ros import qos

torch = pytest.importorskip('torch')
CLOUD = 'cloudseg_ros.nodes.cloud_node'
EDGE = 'cloudseg_ros.nodes.edge_node'
NO_CLOCK = 'use_sim_time is true but no /clock'


@pytest.fixture(scope='module')
def tiny_models(tmp_path_factory):
    from cloudseg_ros.nets.carn import CARNConfig
    from cloudseg_ros.nets.checkpoint import build_model, save_checkpoint
    from cloudseg_ros.nets.icnet import ICNetConfig
    folder = tmp_path_factory.mktemp('models')
    torch.manual_seed(0)
    seg = ICNetConfig(width=8)
    save_checkpoint(folder / 'seg_icnet.pt', build_model('icnet', seg), 'icnet', asdict(seg))
    sr = CARNConfig(scale=4, channels=8, mobile=True)
    save_checkpoint(folder / 'sr_carnm_x4_aware.pt', build_model('carn', sr), 'carn',
                    asdict(sr))
    return str(folder)


def test_sim_time_without_clock_warns_and_rate_limit_drops(
        launch, ros_node, spin_until, tiny_models):
    cloud = launch(CLOUD, params={'robot_namespaces': ['/s1'], 'models_dir': tiny_models,
                                  'device': 'cpu', 'use_sim_time': True,
                                  'max_frame_rate_hz': 4.0, 'publish_color': False})
    edge = launch(EDGE, namespace='/s1', params={'use_sim_time': True, 'scale': 4,
                                                 'useful_threshold': 0.0, 'max_rate_hz': 60.0})
    pub = ros_node.create_publisher(Image, '/s1/image_raw', qos.SENSOR)
    masks, stats = [], []
    ros_node.create_subscription(Image, '/s1/mask', masks.append, qos.IMAGE)
    ros_node.create_subscription(PipelineStats, '/s1/cloud_stats', stats.append, qos.STATS)
    t = 0

    def publish_until(predicate):
        def step():
            nonlocal t
            t += 1
            msg = Image(header=Header(stamp=ros_node.get_clock().now().to_msg()), width=160,
                        height=120, encoding='rgb8', step=480)
            msg.data = np.full((120, 160, 3), t % 256, np.uint8).tobytes()
            pub.publish(msg)
            spin_until(lambda: False, 0.04)  # ~20 images/s
            return predicate()
        return step

    assert spin_until(publish_until(lambda: len(masks) >= 3), 90.0), cloud.log() + edge.log()
    # Past the first second's burst, 20 frames/s against 4 Hz: most are dropped, some served.
    masks.clear()
    assert spin_until(publish_until(lambda: len(masks) >= 3 and stats
                                    and stats[-1].frames_rejected >= 10), 30.0), cloud.log()
    assert 'max_frame_rate_hz' in cloud.log()
    assert spin_until(lambda: NO_CLOCK in cloud.log() and NO_CLOCK in edge.log(), 10.0), (
        cloud.log() + edge.log())
    assert cloud.alive() and edge.alive()
