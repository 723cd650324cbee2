"""Which engine serves which robot: rendezvous hashing with bounded load.

Every robot ranks every slot (a GPU engine, on this server or another) by a hash of the pair
and goes to its best-ranked slot that still has room; a slot's room is the fleet's fair share
rounded up, times `1 + slack`. The result depends only on the robot and slot names, so every
party that sees the same membership computes the same assignment without talking to a broker,
and when a slot appears or disappears only the robots that must move do (the disappeared slot's
robots, plus the few that a full slot pushes on). Used by the cloud node to spread robots over
its engines (`devices`) and by `cloudseg fleet-sim` to check the layout at 1,000 robots.
"""
import hashlib
import math
from typing import Dict, Iterable, List, Mapping, Sequence


def _score(robot: str, slot: str) -> int:
    """Stable pseudo-random rank of (robot, slot); the same on every machine and run."""
    digest = hashlib.blake2b(f'{robot}\0{slot}'.encode(), digest_size=8).digest()
    return int.from_bytes(digest, 'big')


def capacity(robots: int, slots: int, slack: float = 0.25, share: float = None) -> int:
    """Most robots one slot takes: its share (default 1/slots) of the fleet, times 1 + slack.

    Rounded up, and at least 1.
    """
    if slots < 1:
        raise ValueError('no slot to assign robots to')
    share = 1.0 / slots if share is None else share
    return max(1, math.ceil(robots * share * (1.0 + slack) - 1e-9))


def assign(robots: Iterable[str], slots: Sequence[str], slack: float = 0.25,
           weights: Mapping[str, float] = None) -> Dict[str, str]:
    """{robot: slot}: each robot's best-ranked slot with room.

    `weights` (default 1 each) share the fleet between slots, e.g. by GPU speed. Robots are
    placed in order of their name's hash, so the result does not depend on the order they were
    given in. Raises ValueError without slots.
    """
    robots = sorted(set(robots), key=lambda r: (_score(r, ''), r))
    slots = list(dict.fromkeys(slots))
    if not slots:
        raise ValueError('no slot to assign robots to')
    weights = {s: float((weights or {}).get(s, 1.0)) for s in slots}
    if min(weights.values()) <= 0:
        raise ValueError(f'slot weights must be > 0, got {weights}')
    total = sum(weights.values())
    limit = {s: capacity(len(robots), len(slots), slack, weights[s] / total) for s in slots}
    load = {s: 0 for s in slots}
    result = {}
    for robot in robots:
        for slot in sorted(slots, key=lambda s: _score(robot, s), reverse=True):
            if load[slot] < limit[slot]:
                load[slot] += 1
                result[robot] = slot
                break
    return result


def loads(assignment: Mapping[str, str], slots: Sequence[str]) -> List[int]:
    """Robots per slot, in `slots` order."""
    counts = {s: 0 for s in slots}
    for slot in assignment.values():
        counts[slot] += 1
    return [counts[s] for s in slots]


def moved(before: Mapping[str, str], after: Mapping[str, str]) -> int:
    """Robots present in both assignments whose slot changed."""
    return sum(1 for robot, slot in after.items() if robot in before and before[robot] != slot)
