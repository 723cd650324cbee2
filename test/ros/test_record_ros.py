"""`cloudseg demo --record`: a short run with the tiny CPU models, read back with mcap."""
import json
import math
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
    state_pub.publish(ControllerState(config_name='x4-jpeg-q75', target_config='x4-jpeg-q75',
                                      scale=4, reason='start'))
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


def _check_with_rosbags(path, counts):
    """An independent rosbag2 implementation (rosbags) opens the file and, knowing no message
    types beforehand, deserializes every message from the definitions the file carries."""
    rosbags = pytest.importorskip('rosbags.highlevel')
    from rosbags.typesys import Stores, get_typestore
    with rosbags.AnyReader([path], default_typestore=get_typestore(Stores.EMPTY)) as reader:
        assert {c.topic: c.msgcount for c in reader.connections if c.msgcount} == counts
        assert {c.topic: c.msgtype for c in reader.connections if c.msgcount} == {
            t: EXPECTED_TYPES[t] for t in counts}
        decoded = sum(1 for c, _, raw in reader.messages() if reader.deserialize(raw, c.msgtype))
    assert decoded == sum(counts.values())


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
    # One edge_stats per sent frame; frames are best effort and a busy recorder may lose a few
    # of either (keep-last queues), never many.
    assert abs(len(messages[f'{NS}/edge_stats']) - len(frames)) <= max(2, len(frames) // 10)
    assert len(messages['/diagnostics']) >= 3
    states = [m for _, m in messages[f'{NS}/controller_state']]
    assert [s.config_name for s in states] == ['x4-jpeg-q75']  # latched: recorded once

    # The acquisition stamp travels: a mask's stamp is one of the sent frames'. The recorder
    # subscribes to `frames` once it discovers the edge (up to DISCOVERY_PERIOD_S late), and
    # to the cloud's topics before: masks of frames sent before that are left out.
    sent = {_stamp_ns(f.header) for f in frames}
    comparable = [m for _, m in masks if _stamp_ns(m.header) >= min(sent)]
    matched = [m for m in comparable if _stamp_ns(m.header) in sent]
    assert len(comparable) >= 5 and len(matched) >= 0.9 * len(comparable)
    size = (frames[0].orig_height, frames[0].orig_width)
    for log_time, mask in masks:
        assert log_time >= _stamp_ns(mask.header)  # received after acquisition, same clock
        assert decode_mask_png(bytes(mask.data)).shape == size
    log_times = [t for t, _ in messages[f'{NS}/cloud_stats']]
    assert log_times == sorted(log_times)

    _check_with_rosbags(bag, {t: len(m) for t, m in messages.items()})

    # The recording replays: camera_replay's reader plays the uplink JPEGs.
    source = BagSource(str(bag), loop=False, topic=f'{NS}/image_lowres/compressed')
    first = source.read_frame()
    assert first.rgb.shape == (frames[0].height, frames[0].width, 3)
    assert first.stamp_ns in sent

    # cloudseg report redraws the run from the bag alone.
    done = subprocess.run([sys.executable, '-m', 'cloudseg_ros.cli', 'report', str(bag),
                           '--out', str(tmp_path / 'report')], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = json.loads((tmp_path / 'report' / 'summary.json').read_text())
    analysed = [m for _, m in messages[f'{NS}/cloud_stats']
                if m.stage == 'cloud' and math.isnan(m.probe_agreement_miou)]
    assert summary['masks'] == len(analysed) > 0
    assert summary['namespace'] == NS and summary['seconds'] >= 5
    assert summary['latency_ms_median'] > 0 and summary['analysed_fps'] > 0
    assert [c['config'] for c in summary['controller_changes']] == ['x4-jpeg-q75']
    assert (tmp_path / 'report' / 'report.png').stat().st_size > 10_000


def test_record_command_with_robot_only(launch, tmp_path):
    """`cloudseg record` against a robot without a cloud: what is there is written, what never
    appeared is listed, progress lines while it runs, a report at the end."""
    params = {'source': DEFAULT_CLIP, 'rate_hz': 15.0}
    launch('cloudseg_ros.nodes.camera_replay_node', namespace='/rr', params=params)
    launch('cloudseg_ros.nodes.edge_node', namespace='/rr')
    bag = tmp_path / 'robot.mcap'
    done = subprocess.run(
        [sys.executable, '-m', 'cloudseg_ros.cli', 'record', '--out', str(bag), '--namespace',
         '/rr', '--duration', '12', '--progress-s', '2', '--raw-images'],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert len([ln for ln in done.stdout.splitlines() if ln.startswith('record t=')]) >= 3
    assert 'never published (not in the file): /rr/mask/compressed' in done.stdout
    messages, schemas = _read_bag(str(bag))
    assert schemas['/rr/image_raw'] == ('sensor_msgs/msg/Image', 'ros2msg', 'cdr')
    assert len(messages['/rr/frames']) >= 10 and len(messages['/rr/image_raw']) >= 10
    assert (tmp_path / 'robot_report' / 'report.png').exists(), done.stdout[-2000:]
