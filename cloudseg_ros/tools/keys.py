"""`cloudseg keys`: the certificate authority and certificates of the zenoh uplink (mutual TLS).

    cloudseg keys --out keys --server-host cloud.example.org robot1 robot2

writes into --out (created if missing; existing files are kept unless --force):

    ca.pem / ca.key                 the fleet's CA (keep ca.key offline: it signs new robots)
    server.pem / server.key         the server's certificate (CN `cloudseg-server`, SANs
                                    --server-host, default localhost and 127.0.0.1)
    robot1.pem / robot1.key ...     one certificate per robot; its common name is the robot's
                                    name, which the server's access control keys on

Keys are EC P-256, private keys written with mode 0600. Every certificate may serve as client
and server (zenoh peers may connect in either direction). Only `ca.pem`, the robot's own pair
and nothing else goes onto a robot.
"""
import argparse
import datetime
import ipaddress
import os
import sys
from dataclasses import dataclass
from typing import List, Optional, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cloudseg_ros.core.zenoh_fleet import check_name, SERVER_NAME

DEFAULT_DAYS = 825  # the longest lifetime common clients accept for a leaf certificate


@dataclass(frozen=True)
class Issued:
    """A written certificate: its common name and files."""

    name: str
    cert_path: str
    key_path: str


def _write(path: str, data: bytes, private: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(path, flags, 0o600 if private else 0o644)
    with os.fdopen(fd, 'wb') as f:
        f.write(data)


def _save(out_dir: str, stem: str, cert: x509.Certificate, key) -> Issued:
    cert_path = os.path.join(out_dir, stem + '.pem')
    key_path = os.path.join(out_dir, stem + '.key')
    _write(key_path, key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()), private=True)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), private=False)
    return Issued(stem, cert_path, key_path)


def _builder(subject: str, issuer: str, public_key, days: int) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            # Back-dated a little so a robot whose clock lags accepts a fresh certificate.
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=days)))


def make_ca(out_dir: str, days: int = 3650) -> Issued:
    """Create the fleet's self-signed CA (ca.pem, ca.key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = _builder('cloudseg-ca', 'cloudseg-ca', key.public_key(), days)
    builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
    builder = builder.add_extension(x509.KeyUsage(
        digital_signature=False, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
        encipher_only=False, decipher_only=False), critical=True)
    builder = builder.add_extension(
        x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    return _save(out_dir, 'ca', builder.sign(key, hashes.SHA256()), key)


def load_ca(out_dir: str):
    """(certificate, private key) of the CA in out_dir."""
    with open(os.path.join(out_dir, 'ca.pem'), 'rb') as f:
        cert = x509.load_pem_x509_certificate(f.read())
    with open(os.path.join(out_dir, 'ca.key'), 'rb') as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    return cert, key


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def issue(out_dir: str, name: str, hosts: Sequence[str], days: int = DEFAULT_DAYS) -> Issued:
    """Sign a leaf certificate with CN `name` (and SANs `hosts`) by the CA in out_dir."""
    ca_cert, ca_key = load_ca(out_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = _builder(name, ca_cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0]
                       .value, key.public_key(), days)
    builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None),
                                    critical=True)
    builder = builder.add_extension(x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    builder = builder.add_extension(_san(list(hosts) or [name]), critical=False)
    builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
        ca_key.public_key()), critical=False)
    return _save(out_dir, name, builder.sign(ca_key, hashes.SHA256()), key)


def make_keys(out_dir: str, robots: Sequence[str], server_hosts: Sequence[str],
              force: bool = False) -> List[Issued]:
    """CA (unless one is there), server and robot certificates; returns what was written."""
    robots = [check_name(r) for r in robots]
    os.makedirs(out_dir, exist_ok=True)
    written = []
    if force or not os.path.exists(os.path.join(out_dir, 'ca.key')):
        written.append(make_ca(out_dir))
    wanted = [(SERVER_NAME, server_hosts)] + [(r, [r]) for r in robots]
    for name, hosts in wanted:
        if force or not os.path.exists(os.path.join(out_dir, name + '.pem')):
            written.append(issue(out_dir, name, hosts))
    return written


def common_name(cert_path: str) -> str:
    """The common name of a PEM certificate (what the uplink's access control keys on)."""
    with open(cert_path, 'rb') as f:
        cert = x509.load_pem_x509_certificate(f.read())
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def main(argv: Optional[List[str]] = None) -> int:
    """Write the CA, server and robot certificates."""
    parser = argparse.ArgumentParser(prog='cloudseg keys', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('robots', nargs='*', help='robot names (certificate common names)')
    parser.add_argument('--out', default='keys', help='folder for the keys (default: keys)')
    parser.add_argument('--server-host', action='append', default=[],
                        help='DNS name or IP robots use to reach the server (repeatable; '
                             'default localhost and 127.0.0.1)')
    parser.add_argument('--force', action='store_true',
                        help='replace existing files (a new CA invalidates every certificate)')
    args = parser.parse_args(argv)
    try:
        written = make_keys(args.out, args.robots, args.server_host or ['localhost', '127.0.0.1'],
                            args.force)
    except ValueError as err:
        print(f'cloudseg keys: {err}', file=sys.stderr)
        return 2
    for item in written:
        print(f'{item.name}: {item.cert_path} {item.key_path}')
    if not written:
        print(f'nothing to do: every certificate is already in {args.out} (--force replaces)')
    return 0
