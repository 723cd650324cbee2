"""ROS 2 message definitions as rosbag2 stores them in MCAP schemas ('ros2msg' encoding).

rosbag2 writes the type's own .msg text, then every type it depends on (recursively, each once)
after a line of 80 '=' and a line `MSG: pkg/Type`. The texts come from the .msg files that the
installed packages ship in `share/<pkg>/msg/` (the ament index, or this environment's prefix for
the PyPI wheels); our own types come from the checkout's (or installed) `msg/` folder.
"""
import os
import re
import sys
from typing import Dict, List, Tuple

SEPARATOR = '=' * 80
PACKAGE = 'cloudseg_ros'
PRIMITIVES = frozenset((
    'bool', 'byte', 'char', 'float32', 'float64', 'int8', 'uint8', 'int16', 'uint16',
    'int32', 'uint32', 'int64', 'uint64', 'string', 'wstring'))
_FIELD_TYPE = re.compile(r'^([A-Za-z0-9_/]+)')


class DefinitionError(LookupError):
    """A message type whose .msg file cannot be found."""


def _share_dirs() -> List[str]:
    """Install prefixes' share folders: the ament index's first, then this Python's prefix."""
    prefixes = [p for p in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if p]
    prefixes.append(sys.prefix)
    return [os.path.join(p, 'share') for p in prefixes]


def msg_file(pkg: str, name: str) -> str:
    """Path of `pkg/msg/name.msg`; DefinitionError naming where it was looked for."""
    candidates = []
    if pkg == PACKAGE:
        from cloudseg_ros.paths import package_file
        candidates.append(package_file('msg', name + '.msg'))
    candidates += [os.path.join(share, pkg, 'msg', name + '.msg') for share in _share_dirs()]
    for path in candidates:
        if os.path.exists(path):
            return path
    raise DefinitionError(f'no definition of {pkg}/msg/{name} in {", ".join(candidates)}')


def split_type(full_name: str) -> Tuple[str, str]:
    """('pkg', 'Type') of 'pkg/msg/Type' or 'pkg/Type'."""
    parts = full_name.split('/')
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[1] != 'msg'):
        raise DefinitionError(f"'{full_name}' is not a message type name (pkg/msg/Type)")
    return parts[0], parts[-1]


def dependencies(text: str, pkg: str) -> List[Tuple[str, str]]:
    """(pkg, Type) of every non-primitive field type of a .msg text, in order of appearance."""
    found = []
    for line in text.splitlines():
        line = line.split('#', 1)[0].strip()
        match = _FIELD_TYPE.match(line)
        if not match:
            continue
        base = match.group(1)
        if base in PRIMITIVES:
            continue
        if base == 'Header':  # the one type ROS resolves without a package
            dep = ('std_msgs', 'Header')
        elif '/' in base:
            dep = split_type(base)
        else:
            dep = (pkg, base)
        if dep not in found:
            found.append(dep)
    return found


def definition(full_name: str) -> str:
    """The MCAP schema text of a type (rosbag2's concatenated .msg definitions)."""
    pkg, name = split_type(full_name)
    texts: Dict[Tuple[str, str], str] = {}
    order: List[Tuple[str, str]] = []
    pending = [(pkg, name)]
    while pending:
        current = pending.pop(0)
        if current in texts:
            continue
        with open(msg_file(*current)) as f:
            texts[current] = f.read()
        order.append(current)
        pending += dependencies(texts[current], current[0])
    parts = [texts[order[0]].rstrip('\n')]
    for dep in order[1:]:
        parts.append(f'{SEPARATOR}\nMSG: {dep[0]}/{dep[1]}\n{texts[dep].rstrip(chr(10))}')
    return '\n'.join(parts) + '\n'
