"""`cloudseg keys`: a CA, a server and per-robot certificates that chain to it."""
import os
import stat

import pytest

pytest.importorskip('cryptography')
from cryptography import x509  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID  # noqa: E402

from cloudseg_ros.tools import keys  # noqa: E402


def _cert(path):
    with open(path, 'rb') as f:
        return x509.load_pem_x509_certificate(f.read())


def test_robot_and_server_certificates_chain_to_the_ca(tmp_path):
    out = str(tmp_path / 'keys')
    assert keys.main(['--out', out, '--server-host', 'cloud.example.org',
                      '--server-host', '10.0.0.5', 'robot1', 'robot2']) == 0
    ca = _cert(os.path.join(out, 'ca.pem'))
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for name in ('robot1', 'robot2', keys.SERVER_NAME):
        cert = _cert(os.path.join(out, name + '.pem'))
        cert.verify_directly_issued_by(ca)  # raises if not signed by this CA
        assert keys.common_name(os.path.join(out, name + '.pem')) == name
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert ExtendedKeyUsageOID.CLIENT_AUTH in usages
        assert ExtendedKeyUsageOID.SERVER_AUTH in usages
        mode = stat.S_IMODE(os.stat(os.path.join(out, name + '.key')).st_mode)
        assert mode == 0o600, oct(mode)
    san = _cert(os.path.join(out, keys.SERVER_NAME + '.pem')).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ['cloud.example.org']
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ['10.0.0.5']


def test_a_second_run_adds_robots_and_keeps_the_ca(tmp_path):
    out = str(tmp_path)
    keys.make_keys(out, ['robot1'], ['localhost'])
    ca_before = open(os.path.join(out, 'ca.pem'), 'rb').read()
    robot1_before = open(os.path.join(out, 'robot1.pem'), 'rb').read()
    written = keys.make_keys(out, ['robot1', 'robot3'], ['localhost'])
    assert [w.name for w in written] == ['robot3']
    assert open(os.path.join(out, 'ca.pem'), 'rb').read() == ca_before
    assert open(os.path.join(out, 'robot1.pem'), 'rb').read() == robot1_before
    _cert(os.path.join(out, 'robot3.pem')).verify_directly_issued_by(
        _cert(os.path.join(out, 'ca.pem')))


def test_a_certificate_of_another_ca_does_not_verify(tmp_path):
    keys.make_keys(str(tmp_path / 'a'), ['robot1'], ['localhost'])
    keys.make_keys(str(tmp_path / 'b'), ['robot1'], ['localhost'])
    with pytest.raises(Exception):
        _cert(str(tmp_path / 'b' / 'robot1.pem')).verify_directly_issued_by(
            _cert(str(tmp_path / 'a' / 'ca.pem')))


@pytest.mark.parametrize('name', ['', 'a/b', 'robot 1', 'x' * 64, keys.SERVER_NAME, 'ca', '*'])
def test_unusable_robot_names_are_refused(tmp_path, name):
    with pytest.raises(ValueError):
        keys.make_keys(str(tmp_path), [name], ['localhost'])
    assert keys.main(['--out', str(tmp_path / 'cli'), name]) == 2
