"""Rendezvous assignment of robots to engines: balanced, stable, few moves on change."""
import random

import pytest

from cloudseg_ros.core.fleet_assign import assign, capacity, loads, moved

ROBOTS = [f'/robot{i}' for i in range(1000)]
SLOTS = [f'server{s}/cuda:{g}' for s in range(8) for g in range(8)]


def test_every_robot_is_assigned_within_capacity():
    result = assign(ROBOTS, SLOTS)
    assert set(result) == set(ROBOTS)
    assert max(loads(result, SLOTS)) <= capacity(len(ROBOTS), len(SLOTS))


def test_order_of_input_does_not_matter():
    shuffled = ROBOTS[:]
    random.Random(3).shuffle(shuffled)
    assert assign(shuffled, SLOTS[::-1]) == assign(ROBOTS, SLOTS)


def test_losing_a_server_moves_mostly_its_own_robots():
    before = assign(ROBOTS, SLOTS)
    survivors = [s for s in SLOTS if not s.startswith('server3/')]
    after = assign(ROBOTS, survivors)
    orphans = sum(1 for slot in before.values() if slot.startswith('server3/'))
    assert all(slot in survivors for slot in after.values())
    # Everyone on server3 moves; of the others, only a few are pushed on by full slots.
    assert orphans <= moved(before, after) <= orphans + len(ROBOTS) // 10


def test_a_robot_joining_moves_nobody_else_most_of_the_time():
    before = assign(ROBOTS[:999], SLOTS)
    after = assign(ROBOTS, SLOTS)
    assert moved(before, after) <= 5


def test_weights_give_a_slot_less_room_and_no_slots_is_an_error():
    result = assign(ROBOTS[:100], ['a', 'b'], weights={'b': 0.25})
    # b's share is 0.25 / 1.25 = 20 robots, 25 with the slack; a takes the rest.
    assert loads(result, ['a', 'b'])[1] <= 25 and sum(loads(result, ['a', 'b'])) == 100
    with pytest.raises(ValueError):
        assign(ROBOTS, [])
