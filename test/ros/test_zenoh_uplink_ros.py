"""The zenoh uplink with mutual TLS between processes on loopback (`uplink_transport: zenoh`).

- end to end: camera images -> edge (robot's DDS domain) -> zenoh/mTLS -> cloud (another DDS
  domain, so nothing can cross over DDS) -> masks and stats back on the robot's topics, again
  after the cloud is killed (-9) and restarted, without restarting the edge;
- who may talk: frames from robot B's certificate on B's key reach B's stream (the positive
  control, before and after the attempts); a malformed message from B is dropped; robot A's
  certificate publishing as B, a client without a certificate, a client whose certificate
  another CA signed, and a DDS publisher on B's `frames` next to the cloud all get nothing
  through; A can neither read B's downlink nor put on it;
- the robot's side of the handshake: an edge dialling a name the server's certificate lacks,
  and an edge whose keys another CA made, get no link, log why (core/tls_probe.py), and no
  frame of theirs comes back as a mask or statistics.

The weights are tiny random-init networks: these tests check plumbing and access, not accuracy.
"""
import itertools
import json
import os
import socket
import time

import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage

from cloudseg_ros.core.codecs import FrameEncoder
from cloudseg_ros.core.zenoh_fleet import down_key, frames_key
from cloudseg_ros.msg import EncodedFrame, PipelineStats
from cloudseg_ros.ros.param_client import RemoteParams
from cloudseg_ros.ros import qos

zenoh = pytest.importorskip('zenoh')
pytest.importorskip('cryptography')
pytest.importorskip('torch')
from cloudseg_ros.tools.keys import make_keys  # noqa: E402
from conftest import SceneCamera, moving_scene  # noqa: E402

CLOUD = 'cloudseg_ros.nodes.cloud_node'
# One sequence for every frame any sender makes: a refused frame is never merely a stale seq.
SEQ = itertools.count(1)
EDGE = 'cloudseg_ros.nodes.edge_node'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _other_domain() -> str:
    return str(1 + (int(os.environ['ROS_DOMAIN_ID']) + 50) % 100)


def _zenoh_params(keys_dir, endpoint):
    return {'uplink_transport': 'zenoh', 'zenoh_keys_dir': keys_dir,
            'zenoh_endpoint': endpoint}


@pytest.fixture
def fleet(tmp_path, launch, tiny_models):
    """Keys for z1 and z2 and a zenoh cloud serving both; (keys_dir, port, cloud process)."""
    keys_dir = str(tmp_path / 'keys')
    make_keys(keys_dir, ['z1', 'z2'], ['localhost', '127.0.0.1'])
    port = _free_port()
    params = {'robot_namespaces': ['/z1', '/z2'], 'models_dir': tiny_models, 'device': 'cpu',
              **_zenoh_params(keys_dir, f'tls/127.0.0.1:{port}')}
    return keys_dir, port, params


def _client(keys_dir, port, cert_name=None, ca_dir=None):
    """A zenoh peer dialling the cloud like a robot, with `cert_name`'s pair or none."""
    tls = {'root_ca_certificate': os.path.join(ca_dir or keys_dir, 'ca.pem')}
    if cert_name:
        tls.update(enable_mtls=True,
                   connect_private_key=os.path.join(ca_dir or keys_dir, cert_name + '.key'),
                   connect_certificate=os.path.join(ca_dir or keys_dir, cert_name + '.pem'))
    settings = {'mode': 'peer', 'scouting/multicast/enabled': False, 'listen/endpoints': [],
                'connect/endpoints': [f'tls/localhost:{port}'], 'connect/timeout_ms': -1,
                'connect/exit_on_failure': False, 'transport/link/tls': tls}
    config = zenoh.Config()
    for path, value in settings.items():
        config.insert_json5(path, json.dumps(value))
    return zenoh.open(config)


def _frame(stamp_s: float) -> bytes:
    """A valid CDR EncodedFrame (JPEG, x4 of 480x360) whose stamp identifies its sender."""
    seq = next(SEQ)
    rgb = moving_scene(seq)[::4, ::4].copy()
    enc = FrameEncoder('jpeg').encode(rgb, force_keyframe=False)
    msg = EncodedFrame(session_id=7, seq=seq, kind=EncodedFrame.KIND_USEFUL, orig_width=480,
                       orig_height=360, width=rgb.shape[1], height=rgb.shape[0], scale=4,
                       codec=enc.codec, keyframe=enc.keyframe)
    msg.header.stamp.sec = int(stamp_s)
    msg.data = enc.data
    return serialize_message(msg)


def test_frames_up_and_masks_down_over_zenoh_mtls(fleet, launch, ros_node, spin_until):
    keys_dir, port, params = fleet
    cloud = launch(CLOUD, params=params, env={'ROS_DOMAIN_ID': _other_domain()})
    edge = launch(EDGE, namespace='/z1', params={
        'useful_threshold': 0.0, 'scale': 4,
        **_zenoh_params(keys_dir, f'tls/localhost:{port}')})
    camera = SceneCamera(ros_node, '/z1')
    pngs, stats = [], []
    ros_node.create_subscription(CompressedImage, '/z1/mask/compressed', pngs.append,
                                 qos.SENSOR)
    ros_node.create_subscription(PipelineStats, '/z1/cloud_stats', stats.append, qos.STATS)

    def publish():
        camera.publish()
        return len(pngs) >= 2 and any(s.stage == 'cloud' for s in stats)

    assert spin_until(publish, 90.0), cloud.log() + edge.log()
    assert all((p.header.stamp.sec, p.header.stamp.nanosec) in camera.sent for p in pngs)
    assert 'png' in pngs[-1].format
    # Nothing crossed over DDS: the cloud's domain is another one and the edge has no `frames`.
    assert ros_node.count_publishers('/z1/frames') == 0
    assert 'uplink: zenoh router' in cloud.log() and 'uplink: zenoh as z1' in edge.log()
    # kill -9 and restart the server: the robot's session dials again by itself.
    cloud.proc.kill()
    cloud.proc.wait()
    pngs.clear()
    cloud = launch(CLOUD, params=params, env={'ROS_DOMAIN_ID': _other_domain()})
    assert spin_until(lambda: publish() and len(pngs) >= 2, 90.0), cloud.log() + edge.log()
    assert edge.alive()


def _stats_stamps(session, robot):
    """Acquisition seconds of every cloud_stats message the session receives for `robot`."""
    stamps = []
    session.declare_subscriber(down_key(robot, 'cloud_stats'), lambda sample: stamps.append(
        deserialize_message(sample.payload.to_bytes(), PipelineStats).header.stamp.sec))
    return stamps


def _send_for(session, key, stamp_s, seconds):
    """Put a frame with this stamp every 0.1 s for `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        session.put(key, _frame(stamp_s))
        time.sleep(0.1)


def test_only_a_robots_own_certificate_gets_its_frames_in(fleet, launch, ros_node, spin_until,
                                                          tmp_path):
    keys_dir, port, params = fleet
    # Same DDS domain as this test: a DDS publisher next to the cloud is one of the attackers.
    cloud = launch(CLOUD, params=params)
    z2 = _client(keys_dir, port, 'z2')
    z1 = _client(keys_dir, port, 'z1')
    seen_by_z2 = _stats_stamps(z2, 'z2')
    seen_by_z1 = _stats_stamps(z1, 'z2')  # A listening to B's downlink
    dds_stats = []
    ros_node.create_subscription(PipelineStats, '/z2/cloud_stats',
                                 lambda m: dds_stats.append(m.header.stamp.sec), qos.STATS)
    try:
        # Positive control first, so that silence below means refusal, not a slow start.
        # Both the zenoh downlink and this node's DDS subscription must have matched (the
        # latter may match after the first stats went out, so keep sending until both saw one).
        deadline = time.monotonic() + 90.0
        while not (100 in seen_by_z2 and 100 in dds_stats) and time.monotonic() < deadline:
            _send_for(z2, frames_key('z2'), 100, 0.5)
            spin_until(lambda: 100 in dds_stats, 0.2)
        assert 100 in seen_by_z2, cloud.log()
        assert 100 in dds_stats, cloud.log()

        no_cert = _client(keys_dir, port)
        other_dir = str(tmp_path / 'other_ca')
        make_keys(other_dir, ['z2'], ['localhost'])
        forged = _client(keys_dir, port, 'z2', ca_dir=other_dir)
        dds_pub = ros_node.create_publisher(EncodedFrame, '/z2/frames', qos.ENCODED_STREAM)
        for _ in range(20):
            z1.put(frames_key('z2'), _frame(201))      # A publishing as B
            no_cert.put(frames_key('z2'), _frame(202))
            forged.put(frames_key('z2'), _frame(203))  # B's name, another CA
            dds_pub.publish(deserialize_message(_frame(204), EncodedFrame))
            fake = PipelineStats(stage='cloud')
            fake.header.stamp.sec = 205
            z1.put(down_key('z2', 'cloud_stats'), serialize_message(fake))  # A speaking to B
            spin_until(lambda: False, 0.1)
        z2.put(frames_key('z2'), b'\x00\x01 not CDR')  # B itself, malformed: dropped, logged
        # ... then B again: its frame gets through, so the cloud was serving all along.
        _send_for(z2, frames_key('z2'), 300, 2.0)
        assert 300 in seen_by_z2, cloud.log()
        assert spin_until(lambda: 300 in dds_stats, 10.0), cloud.log()
        assert not {201, 202, 203, 204, 205} & (set(seen_by_z2) | set(dds_stats)), cloud.log()
        # z1's session hears its own fake (205) locally; what the server sent z2 it never gets.
        assert not {100, 300} & set(seen_by_z1), 'robot z1 read robot z2 downlink'
        assert list(no_cert.info.routers_zid()) == []  # the TLS handshake never completed
        assert list(forged.info.routers_zid()) == []
        assert cloud.alive() and 'undecodable EncodedFrame' in cloud.log()
        # The router's access rules name the robots known at start: the list cannot change.
        remote = RemoteParams(ros_node, '/cloud')
        assert remote.wait_ready(10.0)
        result = remote.set_and_wait({'robot_namespaces': ['/z1', '/z2', '/z3']})[0]
        assert not result.successful and 'zenoh' in result.reason
    finally:
        for session in (z1, z2):
            session.close()


# What each refused edge logs (core/tls_probe.py), in the server's TLS words.
NAME_REFUSED = "certificate is not valid for '127.0.0.1'"
CA_REFUSED = 'not signed by the fleet CA'


def _stamps(received):
    return {(m.header.stamp.sec, m.header.stamp.nanosec) for m in received}


def test_wrong_server_name_or_ca_gets_no_link_and_the_edge_says_why(
        tmp_path, launch, ros_node, spin_until, tiny_models):
    keys_dir = str(tmp_path / 'keys')
    make_keys(keys_dir, ['z1', 'z2'], ['localhost'])  # the server's certificate: localhost only
    other_dir = str(tmp_path / 'other_ca')
    make_keys(other_dir, ['z2'], ['localhost'])
    port = _free_port()
    # Cloud, edges and this test on one DDS domain: whatever the cloud served would be seen.
    cloud = launch(CLOUD, params={'robot_namespaces': ['/z1', '/z2'], 'models_dir': tiny_models,
                                  'device': 'cpu',
                                  **_zenoh_params(keys_dir, f'tls/127.0.0.1:{port}')})
    edges = {'/z1': launch(EDGE, namespace='/z1', log_dir=tmp_path / 'z1', params={
        'useful_threshold': 0.0,  # dials an address, not the certificate's name
        **_zenoh_params(keys_dir, f'tls/127.0.0.1:{port}')}),
        '/z2': launch(EDGE, namespace='/z2', log_dir=tmp_path / 'z2', params={
            'useful_threshold': 0.0,  # the right name, another CA's keys
            **_zenoh_params(other_dir, f'tls/localhost:{port}')})}
    cameras = {ns: SceneCamera(ros_node, ns) for ns in edges}
    back = []
    for ns in edges:
        ros_node.create_subscription(CompressedImage, f'{ns}/mask/compressed', back.append,
                                     qos.SENSOR)
        ros_node.create_subscription(PipelineStats, f'{ns}/cloud_stats', back.append, qos.STATS)
    z2 = _client(keys_dir, port, 'z2')  # positive control: z2's own keys, the server's name
    seen_by_z2 = _stats_stamps(z2, 'z2')
    try:
        def serve_and_explain():
            for camera in cameras.values():
                camera.publish()
            z2.put(frames_key('z2'), _frame(100))
            return (100 in seen_by_z2 and NAME_REFUSED in edges['/z1'].log()
                    and CA_REFUSED in edges['/z2'].log())

        assert spin_until(serve_and_explain, 90.0), (cloud.log() + edges['/z1'].log()
                                                     + edges['/z2'].log())
        spin_until(lambda: [c.publish() for c in cameras.values()] and False, 5.0)
        sent = set().union(*(c.sent for c in cameras.values()))
        assert not _stamps(back) & sent, 'a frame of a refused edge came back'
        z1_log, z2_log = edges['/z1'].log(), edges['/z2'].log()
        assert 'cloudseg keys --server-host' in z1_log
        assert not [line for line in (z1_log + z2_log).splitlines()
                    if 'uplink: zenoh link to' in line and line.endswith(' up')]
        assert cloud.alive() and all(edge.alive() for edge in edges.values())
    finally:
        z2.close()
