"""The zenoh uplink without processes: names, access rules, settings, optional import, bounds."""
import subprocess
import sys
import time

import pytest

from cloudseg_ros.core import zenoh_fleet
from cloudseg_ros.ros import zenoh_uplink
from cloudseg_ros.ros.zenoh_uplink import UPLINK_PARAMS, UplinkSettings


def _values(**overrides):
    values = {spec.name: spec.default for spec in UPLINK_PARAMS}
    values.update(overrides)
    return values


def test_robot_names_come_from_one_level_namespaces():
    assert zenoh_fleet.robot_name('/robot1') == 'robot1'
    for bad in ('', '/', '/fleet/robot1', '/robot*', '/cloudseg-server'):
        with pytest.raises(ValueError):
            zenoh_fleet.robot_name(bad)


def test_each_robot_may_use_only_its_own_keys():
    acl = zenoh_fleet.access_control(['r1', 'r2'])
    assert acl['enabled'] and acl['default_permission'] == 'deny'
    rules = {rule['id']: rule for rule in acl['rules']}
    for policy in acl['policies']:
        (subject,) = policy['subjects']
        keys = [k for rule_id in policy['rules'] for k in rules[rule_id]['key_exprs']]
        down = zenoh_fleet.down_key(subject, '**')
        assert keys == [zenoh_fleet.frames_key(subject), down, down]
        granted = {(rules[r]['flows'][0], rules[r]['messages'][0]) for r in policy['rules']}
        # up: put frames; down: declare a subscriber and be sent samples, never put.
        assert granted == {('ingress', 'put'), ('ingress', 'declare_subscriber'),
                           ('egress', 'put')}
        assert all(len(rules[r]['flows']) == 1 and len(rules[r]['messages']) == 1
                   for r in policy['rules'])
    subjects = {s['id']: s['cert_common_names'] for s in acl['subjects']}
    assert subjects == {'r1': ['r1'], 'r2': ['r2']}


def _keys(folder, *names):
    for name in ('ca.pem',) + tuple(n + ext for n in names for ext in ('.pem', '.key')):
        (folder / name).write_text('-')
    return str(folder)


def test_session_settings_robot_dials_out_server_listens_with_mtls(tmp_path):
    k = _keys(tmp_path, 'r1', 'cloudseg-server')
    robot = zenoh_fleet.session_settings('tls/srv:7447', k, 'r1', False, 1000)
    assert robot['mode'] == 'peer' and robot['listen/endpoints'] == []
    assert robot['connect/endpoints'] == ['tls/srv:7447']
    assert robot['transport/link/tls']['connect_certificate'] == f'{k}/r1.pem'
    assert robot['transport/link/tls']['enable_mtls'] is True
    assert 'access_control' not in robot
    server = zenoh_fleet.session_settings('tls/0.0.0.0:7447', k, 'cloudseg-server', True,
                                          1000, ['r1'])
    assert server['mode'] == 'router' and server['listen/endpoints'] == ['tls/0.0.0.0:7447']
    assert server['transport/link/tls']['listen_private_key'] == f'{k}/cloudseg-server.key'
    assert server['access_control']['policies']
    assert server['transport/link/rx/max_message_size'] == 1000
    # Frames go over the link, never through /dev/shm (zenoh's same-host shortcut).
    assert robot['transport/shared_memory/enabled'] is False
    assert server['transport/shared_memory/enabled'] is False
    # The robot's send buffer is bounded (a stale backlog after a rate drop), not autotuned.
    assert robot['transport/link/tls']['so_sndbuf'] == zenoh_fleet.SEND_BUFFER_BYTES
    assert 'so_sndbuf' not in server['transport/link/tls']
    with pytest.raises(ValueError, match='tls/'):
        zenoh_fleet.session_settings('tcp/srv:7447', k, 'r1', False, 1000)
    with pytest.raises(ValueError, match='r2.pem, r2.key'):
        zenoh_fleet.session_settings('tls/srv:7447', k, 'r2', False, 1000)


def test_uplink_settings_need_keys_for_zenoh_and_default_endpoints():
    assert UplinkSettings.from_values(_values(), listen=False).transport == 'dds'
    with pytest.raises(ValueError, match='zenoh_keys_dir'):
        UplinkSettings.from_values(_values(uplink_transport='zenoh'), listen=False)
    with pytest.raises(ValueError, match='uplink_transport'):
        UplinkSettings.from_values(_values(uplink_transport='udp'), listen=False)
    robot = UplinkSettings.from_values(_values(uplink_transport='zenoh', zenoh_keys_dir='/k'),
                                       listen=False)
    assert robot.endpoint == 'tls/localhost:7447'
    assert UplinkSettings.from_values(_values(), listen=True).endpoint == 'tls/0.0.0.0:7447'


def test_dds_edge_does_not_import_zenoh():
    code = ('import sys; import cloudseg_ros.nodes.edge_node, cloudseg_ros.nodes.cloud_node; '
            "print('zenoh' in sys.modules)")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == 'False'


def test_missing_zenoh_gives_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, 'zenoh', None)  # import zenoh -> ImportError
    with pytest.raises(RuntimeError, match='eclipse-zenoh'):
        zenoh_uplink.open_session({})


def _plain_pair(port):
    """Two in-process sessions over plain TCP on loopback (the bounds, not TLS, under test)."""
    zenoh = pytest.importorskip('zenoh')
    common = {'scouting/multicast/enabled': False, 'transport/link/rx/max_message_size': 65536}
    server = zenoh_uplink.open_session({**common, 'mode': 'router',
                                        'listen/endpoints': [f'tcp/127.0.0.1:{port}']})
    client = zenoh_uplink.open_session({**common, 'mode': 'peer', 'listen/endpoints': [],
                                        'connect/endpoints': [f'tcp/127.0.0.1:{port}']})
    return zenoh, server, client


def test_inbox_keeps_at_most_depth_newest_and_refuses_oversized_messages():
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    zenoh, server, client = _plain_pair(port)
    try:
        from std_msgs.msg import String
        inbox = zenoh_uplink.Inbox(server, 'cloudseg/r1/frames', String, depth=3)
        pub = zenoh_uplink.ZenohPublisher(client, 'cloudseg/r1/frames')
        time.sleep(0.5)  # subscriber declared at the router
        for i in range(50):
            pub.publish(String(data=f'm{i}'))
        pub.publish(String(data='x' * 200_000))  # beyond the 64 KiB message bound
        time.sleep(1.0)
        got = [inbox.decode(p).data for p in inbox.drain(100)]
        assert got == ['m47', 'm48', 'm49'], got
        client.put('cloudseg/r1/frames', b'\x00\x01 not cdr')
        time.sleep(0.5)
        (raw,) = inbox.drain(10)
        with pytest.raises(ValueError, match='undecodable'):
            inbox.decode(raw)
    finally:
        client.close()
        server.close()
