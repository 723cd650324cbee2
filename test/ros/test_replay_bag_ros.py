"""camera_replay plays a rosbag2 MCAP over real DDS: recorded stamps, frame_id, pace, errors."""
import time

import numpy as np
from sensor_msgs.msg import Image

from cloudseg_ros.ros import qos
from cloudseg_ros.ros.conversions import image_msg_to_rgb

REPLAY = 'cloudseg_ros.nodes.camera_replay_node'
STAMP0_NS = 1_600_000_000 * 10**9


def _stamp_ns(msg):
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def _frames(n):
    return [np.full((36, 48, 3), 10 + 20 * i, np.uint8) for i in range(n)]


def test_replay_keeps_recorded_stamps_frame_id_and_pace(launch, ros_node, spin_until, tmp_path,
                                                        write_image_bag):
    frames = _frames(8)
    bag = write_image_bag(str(tmp_path / 'cam.mcap'), {'/front/image': {
        'frames': frames, 'format': 'png', 'period_ns': 200_000_000, 'frame_id': 'front_cam',
        'stamp0_ns': STAMP0_NS}})
    received = []  # (arrival s, msg)
    ros_node.create_subscription(Image, '/b1/image_raw',
                                 lambda m: received.append((time.monotonic(), m)), qos.SENSOR)
    replay = launch(REPLAY, namespace='/b1', params={'source': bag, 'rate': 2.0, 'loop': True})
    # Frames published before discovery matched are lost (best effort): look for a whole pass
    # starting at the first recorded frame, which a loop replays.

    def first():
        return [i for i, (_, m) in enumerate(received) if _stamp_ns(m) == STAMP0_NS]

    assert spin_until(lambda: first() and len(received) >= first()[0] + 8, 60.0), replay.log()
    start = first()[0]
    one_pass = received[start:start + 8]
    assert [_stamp_ns(m) for _, m in one_pass] == [STAMP0_NS + i * 200_000_000 for i in range(8)]
    assert {m.header.frame_id for _, m in one_pass} == {'front_cam'}
    for i, (_, msg) in enumerate(one_pass):
        np.testing.assert_array_equal(image_msg_to_rgb(msg), frames[i])
    # 7 recorded gaps of 0.2 s at 2x: 0.7 s; loose upper bound for a busy 2-core machine.
    span_s = one_pass[-1][0] - one_pass[0][0]
    assert 0.55 < span_s < 3.0, span_s
    assert "topic '/front/image'" in replay.log()


def test_replay_of_ambiguous_bag_names_topics_and_stays_up(launch, tmp_path, spin_until,
                                                           write_image_bag):
    bag = write_image_bag(str(tmp_path / 'two.mcap'), {
        '/left/image': {'frames': _frames(2)}, '/right/image': {'frames': _frames(2)}})
    replay = launch(REPLAY, namespace='/b2', params={'source': bag})
    assert spin_until(lambda: 'no frames will be published' in replay.log(), 30.0), replay.log()
    assert '/left/image, /right/image' in replay.log() and replay.alive()
