"""core/tls_probe.py against a mutual-TLS server in a thread (Python ssl, no zenoh needed)."""
import os
import socket
import ssl
import threading

import pytest

pytest.importorskip('cryptography')
from cloudseg_ros.core.tls_probe import probe_tls, split_endpoint  # noqa: E402
from cloudseg_ros.core.zenoh_fleet import SERVER_NAME  # noqa: E402
from cloudseg_ros.tools.keys import make_keys  # noqa: E402


class MtlsServer:
    """Accepts mutual-TLS connections as the server's zenoh router does (fleet CA required)."""

    def __init__(self, keys_dir: str) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.context.load_verify_locations(os.path.join(keys_dir, 'ca.pem'))
        self.context.load_cert_chain(os.path.join(keys_dir, SERVER_NAME + '.pem'),
                                     os.path.join(keys_dir, SERVER_NAME + '.key'))
        self.sock = socket.create_server(('127.0.0.1', 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                with self.context.wrap_socket(conn, server_side=True) as tls:
                    tls.settimeout(3.0)
                    tls.recv(1)  # hold the link until the client goes
            except (ssl.SSLError, OSError):
                conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def fleet(tmp_path):
    """Fleet keys (server certificate for 'localhost' only) and a server using them."""
    keys_dir = str(tmp_path / 'fleet')
    make_keys(keys_dir, ['robot1'], ['localhost'])
    server = MtlsServer(keys_dir)
    yield keys_dir, server.port
    server.close()


def test_the_robots_own_keys_and_the_right_name_pass(fleet):
    keys_dir, port = fleet
    assert probe_tls(f'tls/localhost:{port}', keys_dir, 'robot1') == ''


def test_a_name_the_server_certificate_lacks_is_named(fleet):
    keys_dir, port = fleet
    reason = probe_tls(f'tls/127.0.0.1:{port}', keys_dir, 'robot1')
    assert "server's certificate was refused" in reason and '127.0.0.1' in reason
    assert 'cloudseg keys --server-host' in reason


def test_a_server_certificate_from_another_ca_is_named(fleet, tmp_path):
    _, port = fleet
    other = str(tmp_path / 'other')
    make_keys(other, ['robot1'], ['localhost'])
    reason = probe_tls(f'tls/localhost:{port}', other, 'robot1')
    assert "server's certificate was refused" in reason and 'fleet CA' in reason


def test_a_robot_certificate_the_server_refuses_is_named(fleet, tmp_path):
    keys_dir, port = fleet
    mixed = str(tmp_path / 'mixed')  # the fleet's CA, a pair signed by another CA
    make_keys(mixed, ['robot1'], ['localhost'])
    with open(os.path.join(keys_dir, 'ca.pem'), 'rb') as src:
        ca = src.read()
    with open(os.path.join(mixed, 'ca.pem'), 'wb') as dst:
        dst.write(ca)
    reason = probe_tls(f'tls/localhost:{port}', mixed, 'robot1')
    assert "refused this robot's certificate" in reason


def test_unreachable_server_and_bad_settings_are_named(fleet, tmp_path):
    keys_dir, _ = fleet
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        closed_port = s.getsockname()[1]
    assert 'cannot reach 127.0.0.1' in probe_tls(f'tls/127.0.0.1:{closed_port}', keys_dir,
                                                 'robot1')
    assert 'cannot set up TLS' in probe_tls('tcp/localhost:1', keys_dir, 'robot1')
    assert 'cannot set up TLS' in probe_tls('tls/localhost:1', str(tmp_path), 'robot1')
    assert split_endpoint('tls/[::1]:7447') == ('::1', 7447)


def test_reasons_against_the_servers_zenoh_router(tmp_path):
    """The same four answers from the real router (rustls) the cloud runs."""
    zenoh = pytest.importorskip('zenoh')
    import json
    import shutil
    from cloudseg_ros.core.zenoh_fleet import session_settings
    fleet, other, mixed = (str(tmp_path / name) for name in ('fleet', 'other', 'mixed'))
    make_keys(fleet, ['robot1'], ['localhost'])
    make_keys(other, ['robot1'], ['localhost'])
    os.makedirs(mixed)  # the fleet's CA, a robot pair another CA signed
    for src, name in ((fleet, 'ca.pem'), (other, 'robot1.pem'), (other, 'robot1.key')):
        shutil.copy(os.path.join(src, name), os.path.join(mixed, name))
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    config = zenoh.Config()
    for path, value in session_settings(f'tls/127.0.0.1:{port}', fleet, SERVER_NAME, True,
                                        1 << 20, ['robot1']).items():
        config.insert_json5(path, json.dumps(value))
    router = zenoh.open(config)
    try:
        assert probe_tls(f'tls/localhost:{port}', fleet, 'robot1') == ''
        assert "not valid for '127.0.0.1'" in probe_tls(f'tls/127.0.0.1:{port}', fleet, 'robot1')
        assert 'fleet CA' in probe_tls(f'tls/localhost:{port}', other, 'robot1')
        assert "refused this robot's certificate" in probe_tls(f'tls/localhost:{port}', mixed,
                                                               'robot1')
    finally:
        router.close()
