"""`cloudseg view`: a Foxglove WebSocket client subscribes to a robot's mask overlay and gets a
decodable image of the mask's size and stamp; without a client the viewer subscribes to nothing."""
import base64
import json
import re
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import rclpy
from sensor_msgs.msg import CompressedImage
from std_msgs.msg import Header

from cloudseg_ros.core.mask_codec import PNG_MONO8_FORMAT, encode_mask_png
from cloudseg_ros.msg import PipelineStats
from cloudseg_ros.ros import qos

ws_client = pytest.importorskip('websockets.sync.client')
pytest.importorskip('google.protobuf')
NS = '/rv'
SUBPROTOCOLS = ['foxglove.sdk.v1', 'foxglove.websocket.v1']


def _start_view(tmp_path):
    """Start the viewer on a free port; return (process, port) once it serves."""
    log = open(tmp_path / 'view.log', 'w+')
    proc = subprocess.Popen([sys.executable, '-m', 'cloudseg_ros.cli', 'view', '--namespaces',
                             NS, '--port', '0', '--duration', '120'], stdout=log,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        match = re.search(r'ws://127\.0\.0\.1:(\d+)', (tmp_path / 'view.log').read_text())
        if match:
            return proc, int(match.group(1))
        time.sleep(0.2)
    proc.kill()
    pytest.fail('viewer did not start: ' + (tmp_path / 'view.log').read_text()[-2000:])


def _message_class(channel):
    """The protobuf class of an advertised well-known-schema channel."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    assert channel['encoding'] == 'protobuf' and channel['schemaEncoding'] == 'protobuf'
    files = descriptor_pb2.FileDescriptorSet.FromString(base64.b64decode(channel['schema']))
    pool = descriptor_pool.DescriptorPool()
    for proto in files.file:
        pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(channel['schemaName']))


class FakeRobot:
    """Publishes a robot's uplink JPEG, mask PNG (same stamp) and edge stats of 1000-byte
    frames, as edge and cloud would."""

    def __init__(self, node):
        self.node = node
        self.jpeg_pub = node.create_publisher(CompressedImage, f'{NS}/image_lowres/compressed',
                                              qos.IMAGE)
        self.mask_pub = node.create_publisher(CompressedImage, f'{NS}/mask/compressed',
                                              qos.IMAGE)
        self.stats_pub = node.create_publisher(PipelineStats, f'{NS}/edge_stats', qos.STATS)
        self.mask = np.zeros((48, 64), np.uint8)
        self.mask[:, 32:] = 8  # left Sky (grey), right Car (64, 0, 128)
        gray = np.full((12, 16, 3), 128, np.uint8)
        self.jpeg = cv2.imencode('.jpg', gray)[1].tobytes()
        self.stamps = []

    def publish(self):
        stamp = self.node.get_clock().now().to_msg()
        self.stamps.append((stamp.sec, stamp.nanosec))
        header = Header(stamp=stamp, frame_id='cam')
        self.jpeg_pub.publish(CompressedImage(header=header, format='jpeg', data=self.jpeg))
        self.mask_pub.publish(CompressedImage(header=header, format=PNG_MONO8_FORMAT,
                                              data=encode_mask_png(self.mask)))
        self.stats_pub.publish(PipelineStats(header=header, stage='edge', frame_bytes=1000))


def _spin_for(node, robot, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        robot.publish()
        rclpy.spin_once(node, timeout_sec=0.1)


def _receive(ws, node, robot, topics, timeout_s):
    """Subscribe to the viewer's `topics` ({topic: accept(payload) -> bool}); return
    {topic: (payload bytes, advertised channel)} with the first accepted message of each."""
    channels, received = {}, {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and len(received) < len(topics):
        robot.publish()
        rclpy.spin_once(node, timeout_sec=0.02)
        try:
            frame = ws.recv(timeout=0.1)
        except TimeoutError:
            continue
        if isinstance(frame, str):
            op = json.loads(frame)
            for advertised in op.get('channels', []) if op.get('op') == 'advertise' else []:
                if advertised['topic'] in topics:
                    sub_id = len(channels) + 1
                    channels[sub_id] = advertised
                    ws.send(json.dumps({'op': 'subscribe', 'subscriptions': [
                        {'id': sub_id, 'channelId': advertised['id']}]}))
        elif frame[0] == 0x01:  # message data: subscription id, log time, payload
            channel = channels[int.from_bytes(frame[1:5], 'little')]
            if topics[channel['topic']](frame[13:]):
                received.setdefault(channel['topic'], (frame[13:], channel))
    assert len(received) == len(topics), f'only {list(received)} within the timeout'
    return received


def test_foxglove_client_gets_the_overlay_and_idle_costs_nothing(tmp_path, ros_node):
    robot = FakeRobot(ros_node)
    proc, port = _start_view(tmp_path)
    try:
        _spin_for(ros_node, robot, 2.0)
        # Nobody watches: the viewer has no subscription on the robot's topics.
        assert ros_node.count_subscribers(f'{NS}/mask/compressed') == 0
        assert ros_node.count_subscribers(f'{NS}/image_lowres/compressed') == 0
        with ws_client.connect(f'ws://127.0.0.1:{port}', subprotocols=SUBPROTOCOLS,
                               open_timeout=10) as ws:
            got = _receive(ws, ros_node, robot, {
                f'{NS}/mask_overlay': lambda payload: True,
                f'{NS}/stats': lambda payload: json.loads(payload)['sent_fps'] > 0}, 30.0)
            assert ros_node.count_subscribers(f'{NS}/mask/compressed') == 1
        payload, channel = got[f'{NS}/mask_overlay']
        assert channel['schemaName'] == 'foxglove.CompressedImage'
        msg = _message_class(channel).FromString(payload)
        rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_COLOR),
                           cv2.COLOR_BGR2RGB)
        assert msg.format == 'jpeg' and rgb.shape == (48, 64, 3) and msg.frame_id == 'cam'
        assert (msg.timestamp.seconds, msg.timestamp.nanos) in robot.stamps
        left, right = rgb[:, 4:28].reshape(-1, 3).mean(0), rgb[:, 36:60].reshape(-1, 3).mean(0)
        assert right[1] < left[1] - 30  # Car's colour over the grey frame, Sky's barely shows
        stats = json.loads(got[f'{NS}/stats'][0])
        assert stats['uplink_kbps'] == pytest.approx(8.0 * stats['sent_fps'])  # 1000 B/frame
        assert stats['latency_ms'] is None  # no cloud_stats were published
        # The client left: the viewer drops its subscriptions again.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and ros_node.count_subscribers(
                f'{NS}/mask/compressed'):
            _spin_for(ros_node, robot, 0.3)
        assert ros_node.count_subscribers(f'{NS}/mask/compressed') == 0
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_shipped_layout_is_the_generated_one_and_names_every_channel():
    from cloudseg_ros.paths import package_file
    from cloudseg_ros.tools.view import NEEDS, build_layout
    shipped = json.loads(open(package_file('config', 'foxglove_layout.json')).read())
    assert shipped == json.loads(build_layout('/robot1').to_json()), \
        'regenerate: cloudseg view --write-layout config/foxglove_layout.json'
    text = json.dumps(shipped)
    for channel in ('camera', 'mask_overlay'):
        assert f'"/robot1/{channel}"' in text
    assert '"/legend"' in text and '/robot1/stats.latency_ms' in text
    assert set(NEEDS) == {'camera', 'mask_overlay', 'stats'}
