"""A sample of the fuzz cases sent over DDS to a live cloud node: it stays up and keeps serving.

CLOUDSEG_FUZZ_DDS_CASES (default 1000) cases of core/fuzz.py are published on the frames topic,
then good frames until one of them comes back as a mask. test/fuzz/ runs the same cases at unit
level; `cloudseg fuzz` runs many more.
"""
import os
import time

import pytest
import rclpy
from sensor_msgs.msg import Image

from cloudseg_ros.core import fuzz
from cloudseg_ros.core.receiver import ReceiveLimits
from cloudseg_ros.msg import EncodedFrame
from cloudseg_ros.ros import qos
from cloudseg_ros.tools.fuzz import frame_msg

pytest.importorskip('torch')
CLOUD = 'cloudseg_ros.nodes.cloud_node'
CASES = int(os.environ.get('CLOUDSEG_FUZZ_DDS_CASES', '1000'))
SEED = 21
# Small bounds keep boundary cases cheap to send and to serve; the cloud gets the same ones.
LIMITS = ReceiveLimits(max_input_pixels=100_000, max_output_pixels=300_000,
                       max_payload_bytes=256 * 1024)
MAX_RSS_GROWTH_MB = 300.0


def _rss_mb(pid: int) -> float:
    with open(f'/proc/{pid}/status') as f:
        line = next(line for line in f if line.startswith('VmRSS:'))
    return int(line.split()[1]) / 1024


def _good(fuzzer, seq):
    """A good frame stamped now (so its mask can be told from earlier ones)."""
    frame = fuzzer.good_jpeg(seq)
    frame.stamp_sec, frame.stamp_nanosec = fuzz.stamp_of(time.time())
    return frame_msg(frame)


def test_cloud_survives_fuzzed_frames_and_serves_the_next_good_one(launch, ros_node,
                                                                   spin_until, tiny_models):
    cloud = launch(CLOUD, params={
        'robot_namespaces': ['/fz'], 'models_dir': tiny_models, 'device': 'cpu',
        'max_input_pixels': LIMITS.max_input_pixels,
        'max_output_pixels': LIMITS.max_output_pixels,
        'max_payload_bytes': LIMITS.max_payload_bytes})
    pub = ros_node.create_publisher(EncodedFrame, '/fz/frames', qos.ENCODED_STREAM)
    masks = []
    ros_node.create_subscription(Image, '/fz/mask', masks.append, qos.IMAGE)
    fuzzer = fuzz.FrameFuzzer(SEED, fuzz.make_seeds(), LIMITS)
    seq = 1
    good_stamps = set()

    def served():
        nonlocal seq
        seq += 1
        msg = _good(fuzzer, seq)
        good_stamps.add((msg.header.stamp.sec, msg.header.stamp.nanosec))
        pub.publish(msg)
        return any((m.header.stamp.sec, m.header.stamp.nanosec) in good_stamps for m in masks)

    assert spin_until(served, 60.0), cloud.log()
    base_rss = _rss_mb(cloud.proc.pid)
    peak_rss = base_rss
    for index in range(CASES):
        case = fuzzer.case(index, seq)
        for frame in case.frames:
            pub.publish(frame_msg(frame))
        seq = max(f.seq for f in case.frames) % (1 << 63) + 2
        rclpy.spin_once(ros_node, timeout_sec=0.002)  # paced: best effort drops a burst
        if index % 50 == 0:
            assert cloud.alive(), f'case {index} [{case.mutations}]\n{cloud.log()[-3000:]}'
            peak_rss = max(peak_rss, _rss_mb(cloud.proc.pid))
    masks.clear()
    good_stamps.clear()  # a mask of a good frame sent after the fuzzed ones
    assert spin_until(served, 30.0), cloud.log()[-3000:]
    assert cloud.alive()
    mask = next(m for m in masks if (m.header.stamp.sec, m.header.stamp.nanosec) in good_stamps)
    assert (mask.width, mask.height) == (256, 192) and mask.encoding == 'mono8'
    peak_rss = max(peak_rss, _rss_mb(cloud.proc.pid))
    assert peak_rss - base_rss < MAX_RSS_GROWTH_MB, (base_rss, peak_rss)
    log = cloud.log()
    assert 'frame rejected' in log
    assert 'unexpected error' not in log, log[-3000:]  # the guard caught nothing
