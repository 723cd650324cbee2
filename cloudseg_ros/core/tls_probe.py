"""Why a robot's mutual-TLS link to the server does not come up, in words (stdlib ssl only).

zenoh retries a refused TLS link silently (its reasons go to the Rust log, off by default), so
a robot whose keys or endpoint are wrong would just never send anything. `probe_tls` repeats
the handshake the robot's zenoh session makes (the fleet CA in ca.pem, the robot's own pair,
the name it dials checked against the server's certificate) with Python's ssl module and says
what went wrong: the server's certificate not valid for the dialled name, not signed by the
fleet CA, the server refusing the robot's certificate, or the server unreachable.
"""
import os
import socket
import ssl
from typing import Tuple

# OpenSSL verification codes with a hint that says what to change.
_HOSTNAME_MISMATCH = (62, 64)  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
_UNKNOWN_ISSUER = (2, 19, 20, 21)  # issuer not found / self-signed in chain / unverifiable
NAME_HINT = ("dial a name the server's certificate holds (cloudseg keys --server-host), "
             'or re-issue it for this one')
CA_HINT = "the server's certificate was not signed by the fleet CA in this robot's ca.pem"


def split_endpoint(endpoint: str) -> Tuple[str, int]:
    """('host', port) of a zenoh 'tls/<host>:<port>' endpoint; ValueError if it is not one."""
    proto, _, address = endpoint.partition('/')
    host, _, port = address.rpartition(':')
    host = host.strip('[]')  # tls/[::1]:7447
    if proto != 'tls' or not host or not port.isdigit():
        raise ValueError(f'zenoh endpoint {endpoint!r}: expected tls/<host>:<port>')
    return host, int(port)


def _context(keys_dir: str, own_name: str) -> ssl.SSLContext:
    """Client context as the robot's zenoh session has it: fleet CA, own pair, name check."""
    context = ssl.create_default_context(cafile=os.path.join(keys_dir, 'ca.pem'))
    context.load_cert_chain(os.path.join(keys_dir, own_name + '.pem'),
                            os.path.join(keys_dir, own_name + '.key'))
    return context


def _verify_failure(err: ssl.SSLCertVerificationError) -> str:
    message = f"the server's certificate was refused: {err.verify_message}"
    if err.verify_code in _HOSTNAME_MISMATCH:
        return f'{message} ({NAME_HINT})'
    if err.verify_code in _UNKNOWN_ISSUER:
        return f'{message} ({CA_HINT})'
    return message


def _server_verdict(tls: ssl.SSLSocket, wait_s: float) -> str:
    """After our side of the handshake: '' unless the server refuses our certificate.

    With TLS 1.3 the server checks the client's certificate after the client has finished, so
    its refusal arrives as an alert on the first read; a server that accepted us waits for
    zenoh's first message and the read times out.
    """
    tls.settimeout(wait_s)
    try:
        data = tls.recv(1)
    except socket.timeout:
        return ''
    except ssl.SSLError as err:
        return f"the server refused this robot's certificate ({err.reason or err})"
    except OSError as err:
        return f'the server closed the connection after the handshake ({err})'
    return '' if data else 'the server closed the connection right after the handshake'


def probe_tls(endpoint: str, keys_dir: str, own_name: str, timeout_s: float = 2.0) -> str:
    """'' if a mutual-TLS handshake with `endpoint` succeeds, else why it does not."""
    try:
        host, port = split_endpoint(endpoint)
        context = _context(keys_dir, own_name)
    except (ValueError, OSError, ssl.SSLError) as err:
        return f'cannot set up TLS: {err}'
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as raw:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                return _server_verdict(tls, timeout_s)
    except ssl.SSLCertVerificationError as err:
        return _verify_failure(err)
    except ssl.SSLError as err:
        return f'TLS handshake with {host}:{port} failed: {err.reason or err}'
    except OSError as err:
        return f'cannot reach {host}:{port}: {err.strerror or err}'
