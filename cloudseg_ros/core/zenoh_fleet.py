"""Names, key expressions, session settings and access rules of the zenoh uplink, as plain data.

No zenoh import here: this builds the JSON that `ros/zenoh_uplink.py` hands to `zenoh.Config`,
so the rules can be read and tested without a session.

Key expressions: a robot called R publishes its frames on `cloudseg/R/frames`; the server
publishes what goes back to it under `cloudseg/R/down/<topic>` (`mask/compressed`, `cloud_stats`,
`keyframe_request`). R is the common name of the robot's certificate (`cloudseg keys`).

Access control runs in the server's zenoh session (the router every robot connects to) and is
keyed on the certificate common name that mutual TLS authenticated: deny by default; the
subject R may put only on `cloudseg/R/frames` and may subscribe to (and be sent) only
`cloudseg/R/down/**`. So a robot cannot publish frames as another robot, read another robot's
masks, or put anything on a downlink, its own included.
"""
import os
import re
from typing import Dict, List, Sequence

PREFIX = 'cloudseg'
SERVER_NAME = 'cloudseg-server'
DEFAULT_PORT = 7447
# The robot's TCP send buffer (the kernel doubles it). Left to autotuning it grew to megabytes:
# when the uplink fell from 8 to 1 Mbit/s in the namespace test, ~1 MB of frames already in it
# drained for 13 s and masks came back up to 9 s old. Bounded, the backlog is about this plus
# zenoh's own queue; at 8 Mbit/s it still allows ~80 ms of round trip.
SEND_BUFFER_BYTES = 65536
# Robot names become key expressions and certificate common names: a safe alphabet, no wildcards.
NAME_PATTERN = re.compile(r'^[A-Za-z0-9_][A-Za-z0-9_\-]{0,62}$')


def check_name(name: str) -> str:
    """Return `name` if it is a usable robot name, else raise ValueError saying why."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or name in (SERVER_NAME, 'ca'):
        raise ValueError(f'robot name {name!r}: use 1-63 letters, digits, _ or - '
                         f"(not '{SERVER_NAME}' or 'ca')")
    return name


def robot_name(namespace: str) -> str:
    """The zenoh/certificate name of a robot from its ROS namespace ('/robot1' -> 'robot1')."""
    name = namespace.strip('/')
    if not name or '/' in name:
        raise ValueError(f"namespace {namespace!r}: the zenoh uplink needs each robot in a "
                         "one-level namespace (e.g. '/robot1'), its name being its certificate's")
    return check_name(name)


def frames_key(robot: str) -> str:
    """Key expression of a robot's uplink frames."""
    return f'{PREFIX}/{robot}/frames'


def down_key(robot: str, topic: str) -> str:
    """Key expression of one downlink topic of a robot (e.g. 'mask/compressed')."""
    return f'{PREFIX}/{robot}/down/{topic}'


def access_control(robots: Sequence[str]) -> Dict:
    """zenoh `access_control` section: each robot's certificate may use only its own keys."""
    rules: List[Dict] = []
    subjects: List[Dict] = []
    policies: List[Dict] = []
    for robot in robots:
        check_name(robot)
        rules.append({'id': f'{robot}_frames_up', 'permission': 'allow', 'flows': ['ingress'],
                      'messages': ['put'], 'key_exprs': [frames_key(robot)]})
        # The robot may subscribe to its downlink (ingress declaration) and be sent its samples
        # (egress put), but not put on it: nobody but the server speaks on a downlink.
        rules.append({'id': f'{robot}_down_sub', 'permission': 'allow', 'flows': ['ingress'],
                      'messages': ['declare_subscriber'], 'key_exprs': [down_key(robot, '**')]})
        rules.append({'id': f'{robot}_down_recv', 'permission': 'allow', 'flows': ['egress'],
                      'messages': ['put'], 'key_exprs': [down_key(robot, '**')]})
        subjects.append({'id': robot, 'cert_common_names': [robot]})
        granted = [f'{robot}_frames_up', f'{robot}_down_sub', f'{robot}_down_recv']
        policies.append({'rules': granted, 'subjects': [robot]})
    return {'enabled': True, 'default_permission': 'deny', 'rules': rules,
            'subjects': subjects, 'policies': policies}


def check_key_files(keys_dir: str, own_name: str) -> None:
    """Raise ValueError naming what is missing from keys_dir (ca.pem, <own_name>.pem/.key)."""
    wanted = ['ca.pem', own_name + '.pem', own_name + '.key']
    missing = [f for f in wanted if not os.path.isfile(os.path.join(keys_dir, f))]
    if missing:
        raise ValueError(f"zenoh_keys_dir {keys_dir!r} lacks {', '.join(missing)} "
                         f'(make them with: cloudseg keys --out DIR {own_name})')


def tls_settings(keys_dir: str, own_name: str, listen: bool) -> Dict:
    """zenoh `transport/link/tls` section for mutual TLS with the fleet CA in keys_dir.

    The robot's socket send buffer is fixed at SEND_BUFFER_BYTES (see there).
    """
    own = f'{keys_dir.rstrip("/")}/{own_name}'
    side = 'listen' if listen else 'connect'
    settings = {'root_ca_certificate': f'{keys_dir.rstrip("/")}/ca.pem', 'enable_mtls': True,
                f'{side}_private_key': own + '.key', f'{side}_certificate': own + '.pem',
                'verify_name_on_connect': True, 'close_link_on_expiration': True}
    if not listen:
        settings['so_sndbuf'] = SEND_BUFFER_BYTES
    return settings


def session_settings(endpoint: str, keys_dir: str, own_name: str, listen: bool,
                     max_message_bytes: int, robots: Sequence[str] = ()) -> Dict[str, object]:
    """{config path: value} for a robot (listen=False) or the server (listen=True) session.

    The robot is a peer that only connects out (no listening port, no scouting: NAT-friendly,
    nothing to find on the robot's network) and retries until the server is there. The server
    is a router that listens on `endpoint` only and applies `access_control(robots)`.
    """
    if not endpoint.startswith('tls/'):
        raise ValueError(f'zenoh endpoint {endpoint!r}: must be tls/<host>:<port> (mutual TLS)')
    check_key_files(keys_dir, own_name)
    settings = {
        'mode': 'router' if listen else 'peer',
        'scouting/multicast/enabled': False,
        'scouting/gossip/enabled': False,
        'transport/link/tls': tls_settings(keys_dir, own_name, listen),
        # Largest message reassembled from the link: memory per message is bounded by this.
        'transport/link/rx/max_message_size': int(max_message_bytes),
        # zenoh 1.x moves messages over 3 kB through /dev/shm when both ends share a host (its
        # "transport optimization", on by default): robot and server are separate hosts, and in
        # the namespace test (tools/wan_test.py) the frames bypassed the shaped link that way.
        'transport/shared_memory/enabled': False,
    }
    if listen:
        settings['listen/endpoints'] = [endpoint]
        settings['access_control'] = access_control(robots)
    else:
        settings.update({'listen/endpoints': [], 'connect/endpoints': [endpoint],
                         'connect/timeout_ms': -1, 'connect/exit_on_failure': False})
    return settings
