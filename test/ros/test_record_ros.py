"""`cloudseg demo --record`: a short run with the tiny CPU models, read back with mcap."""
import os
import subprocess
import sys
import time

import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

from cloudseg_ros.core.bag_source import BagSource
from cloudseg_ros.core.mask_codec import decode_mask_png
from cloudseg_ros.msg import ControllerState
from cloudseg_ros.ros import qos
from cloudseg_ros.tools.demo import DEFAULT_CLIP

pytestmark = pytest.mark.skipif(not os.path.exists(DEFAULT_CLIP), reason='no demo clip')
mcap_reader = pytest.importorskip('mcap.reader')
NS = '/robot1'
EXPECTED_TYPES = {
    f'{NS}/frames': 'cloudseg_ros/msg/EncodedFrame',
    f'{NS}/image_lowres/compressed': 'sensor_msgs/msg/CompressedImage',
    f'{NS}/mask/compressed': 'sensor_msgs/msg/CompressedImage',
    f'{NS}/edge_stats': 'cloudseg_ros/msg/PipelineStats',
    f'{NS}/cloud_stats': 'cloudseg_ros/msg/PipelineStats',
    f'{NS}/controller_state': 'cloudseg_ros/msg/ControllerState',
    '/diagnostics': 'diagnostic_msgs/msg/DiagnosticArray',
}


def _stamp_ns(header):
    return header.stamp.sec * 10**9 + header.stamp.nanosec


def _run_demo_while_publishing(ros_node, args, timeout_s):
    """Run the demo; meanwhile publish /diagnostics at 2 Hz and one latched controller state
    (the demo starts no controller), as a real system's other nodes would."""
    diag_pub = ros_node.create_publisher(DiagnosticArray, '/diagnostics', 10)
    state_pub = ros_node.create_publisher(ControllerState, f'{NS}/controller_state', qos.STATUS)
    state_pub.publish(ControllerState(config_name='x4-jpeg-q75', scale=4, reason='hold'))
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and time.monotonic() < deadline:
        rclpy.spin_once(ros_node, timeout_sec=0.5)
        diag_pub.publish(DiagnosticArray(status=[DiagnosticStatus(name='test', message='ok')]))
    if proc.poll() is None:
        proc.kill()
    out = proc.communicate()[0]
    return proc.returncode, out


def _read_bag(path):
    """{topic: [(log_time, decoded message)]} plus {topic: (schema name, encodings)}."""
    from mcap_ros2.decoder import DecoderFactory
    messages, schemas = {}, {}
    with open(path, 'rb') as f:
        reader = mcap_reader.make_reader(f, decoder_factories=[DecoderFactory()])
        for schema, channel, message, decoded in reader.iter_decoded_messages():
            messages.setdefault(channel.topic, []).append((message.log_time, decoded))
            schemas[channel.topic] = (schema.name, schema.encoding, channel.message_encoding)
    return messages, schemas


def test_demo_record_writes_a_readable_rosbag2_mcap(tiny_models, tmp_path, ros_node):
    bag = tmp_path / 'run.mcap'
    code, out = _run_demo_while_publishing(ros_node, [
        sys.executable, '-m', 'cloudseg_ros.cli', 'demo', '--duration', '8', '--models',
        tiny_models, '--device', 'cpu', '--out', str(tmp_path), '--record', str(bag)], 150)
    assert code == 0, out[-4000:]
    assert f"recorded '{bag}'" in out and 'never published' not in out, out[-3000:]
    messages, schemas = _read_bag(str(bag))
    assert set(messages) == set(EXPECTED_TYPES), (set(messages), out[-2000:])
    for topic, msg_type in EXPECTED_TYPES.items():
        assert schemas[topic] == (msg_type, 'ros2msg', 'cdr')

    frames = [m for _, m in messages[f'{NS}/frames']]
    masks = messages[f'{NS}/mask/compressed']
    assert len(frames) >= 20 and len(masks) >= 5
    # Every sent frame has its edge_stats (both reliable-ish on one host: allow a couple lost).
    assert abs(len(messages[f'{NS}/edge_stats']) - len(frames)) <= 2
    assert len(messages['/diagnostics']) >= 3
    states = [m for _, m in messages[f'{NS}/controller_state']]
    assert [s.config_name for s in states] == ['x4-jpeg-q75']  # latched: recorded once

    # The acquisition stamp travels: a mask's stamp is one of the sent frames'.
    sent = {_stamp_ns(f.header) for f in frames}
    matched = [m for _, m in masks if _stamp_ns(m.header) in sent]
    assert len(matched) >= 0.9 * len(masks)
    size = (frames[0].orig_height, frames[0].orig_width)
    for log_time, mask in masks:
        assert log_time >= _stamp_ns(mask.header)  # received after acquisition, same clock
        assert decode_mask_png(bytes(mask.data)).shape == size
    log_times = [t for t, _ in messages[f'{NS}/cloud_stats']]
    assert log_times == sorted(log_times)

    # The recording replays: camera_replay's reader plays the uplink JPEGs.
    source = BagSource(str(bag), loop=False, topic=f'{NS}/image_lowres/compressed')
    first = source.read_frame()
    assert first.rgb.shape == (frames[0].height, frames[0].width, 3)
    assert first.stamp_ns in sent
