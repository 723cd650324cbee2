"""Issue 12 (faults) across processes: the cloud killed and restarted, the controller killed.

Edge restarts are covered by test_controller_ros.py (the controller re-applies its
configuration). Networks are the tiny random-init ones: these tests check recovery, not masks.
"""
import os
import time

import pytest
from sensor_msgs.msg import Image
from std_msgs.msg import Empty

from cloudseg_ros.msg import EncodedFrame
from cloudseg_ros.ros import qos
from cloudseg_ros.ros.param_client import RemoteParams
from cloudseg_ros.tools.demo import DEFAULT_CLIP, wait_for_cloud

from test_controller_ros import profile_path  # noqa: F401 (fixture)

torch = pytest.importorskip('torch')
pytestmark = pytest.mark.skipif(not os.path.exists(DEFAULT_CLIP), reason='no demo clip')
CLOUD = 'cloudseg_ros.nodes.cloud_node'
CONTROLLER = 'cloudseg_ros.nodes.controller_node'
EDGE = 'cloudseg_ros.nodes.edge_node'
REPLAY = 'cloudseg_ros.nodes.camera_replay_node'
# Issue 12 asks < 2 s from a ready cloud to masks; this 2-core test machine, with the suite or
# a soak running beside it, gets a margin (the measured figure is printed).
RECOVERY_BOUND_S = 5.0


def _timed(node, topic, msg_type, qos_profile):
    """Subscribe; return a list of (monotonic arrival time, message)."""
    received = []
    node.create_subscription(msg_type, topic,
                             lambda msg: received.append((time.monotonic(), msg)), qos_profile)
    return received


def _start_cloud(launch, models):
    return launch(CLOUD, params={'robot_namespaces': ['/f1'], 'models_dir': models,
                                 'device': 'cpu'})


def test_killed_cloud_restarts_and_masks_resume_from_a_key_frame(
        launch, ros_node, spin_until, tiny_models):
    cloud = _start_cloud(launch, tiny_models)
    assert wait_for_cloud(ros_node, cloud, '', 60.0), cloud.log()
    # key_threshold 1: the edge makes key frames only when asked (and at its start), so the
    # restarted cloud cannot happen to join on a content key frame (one in ~6 of this clip).
    edge = launch(EDGE, namespace='/f1', params={'codec': 'h264', 'scale': 4,
                                                 'useful_threshold': 0.0, 'key_threshold': 1.0,
                                                 'max_rate_hz': 10.0})
    launch(REPLAY, namespace='/f1', params={'source': DEFAULT_CLIP, 'rate_hz': 10.0,
                                            'loop': True})
    masks = _timed(ros_node, '/f1/mask', Image, qos.IMAGE)
    frames = _timed(ros_node, '/f1/frames', EncodedFrame, qos.ENCODED_STREAM)
    key_requests = _timed(ros_node, '/f1/keyframe_request', Empty, qos.STATS)
    # This probe's own frames subscription may match after the first masks came back.
    assert spin_until(lambda: len(masks) >= 2 and frames, 60.0), cloud.log() + edge.log()
    session = frames[-1][1].session_id

    cloud.proc.kill()  # kill -9: no clean shutdown, no goodbye to DDS
    cloud.proc.wait()
    killed_at = time.monotonic()
    spin_until(lambda: False, 1.0)  # the edge streams into the void for a moment
    masks.clear()
    key_requests.clear()
    cloud = _start_cloud(launch, tiny_models)
    assert wait_for_cloud(ros_node, cloud, '', 60.0), cloud.log()
    # Ready = its first answered parameter request (it answers once it spins, after the
    # warm-up); the first mask can beat that answer here, so the figure may be negative.
    ready_at = time.monotonic()
    assert spin_until(lambda: bool(masks), 30.0), cloud.log() + edge.log()
    first_mask_at = masks[0][0]
    recovery_s = first_mask_at - ready_at
    print(f'\ncloud restart: first mask {recovery_s:.2f} s after the new cloud answered, '
          f'{first_mask_at - killed_at:.1f} s after the kill')
    assert recovery_s < RECOVERY_BOUND_S

    # H.264: the new cloud, joining mid-stream, asked for a key frame (its first request may go
    # out before this probe has matched the new publisher, so its log is checked too) and the
    # edge sent one before the first mask.
    assert key_requests or 'waiting for a key frame' in cloud.log(), cloud.log()
    keys = [t for t, f in frames if f.kind == EncodedFrame.KIND_KEY and killed_at < t]
    assert keys and keys[0] <= first_mask_at, edge.log()
    # The edge was never restarted: same process, same stream session.
    assert edge.alive() and frames[-1][1].session_id == session


def test_killed_controller_leaves_the_edge_configured_and_streaming(
        launch, ros_node, spin_until, profile_path):  # noqa: F811 (the imported fixture)
    edge = launch(EDGE, namespace='/f2', params={'scale': 1, 'jpeg_quality': 90,
                                                 'useful_threshold': 0.0})
    launch(REPLAY, namespace='/f2', params={'source': DEFAULT_CLIP, 'rate_hz': 10.0,
                                            'loop': True})
    controller = launch(CONTROLLER, namespace='/f2', params={'profile': profile_path,
                                                             'update_period_s': 0.2})
    params = RemoteParams(ros_node, '/f2/edge')
    chosen = {'scale': 4, 'jpeg_quality': 50, 'max_rate_hz': 10.0}

    def edge_values():
        try:
            return params.get_and_wait(list(chosen), 2.0)
        except TimeoutError:
            return None

    assert params.wait_ready(10.0), edge.log()
    assert spin_until(lambda: edge_values() == chosen, 20.0), controller.log() + edge.log()
    controller.proc.kill()
    controller.proc.wait()
    frames = _timed(ros_node, '/f2/frames', EncodedFrame, qos.ENCODED_STREAM)
    assert spin_until(lambda: len(frames) >= 10, 15.0), edge.log()
    assert edge.alive() and edge_values() == chosen
    assert {f.scale for _, f in frames} == {4}
