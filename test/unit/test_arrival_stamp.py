"""The cloud stamps a frame's arrival with the middleware's receive time, not its callback's.

Stamped in the Python callback, the arrival included the wait for an executor thread and the
GIL while inference ran, and that CPU time read as a filling link queue (docs/WAN.md, 4).
"""
from rclpy.clock import ROSClock
from rclpy.subscription import Subscription

from cloudseg_ros.ros.frames import MAX_RECEIVE_STAMP_AGE_S, arrival_time
from cloudseg_ros.ros.guard import CallbackGuard


class _Logger:
    def error(self, text):
        pass


def _callback_type(callback):
    """What rclpy's Subscription makes of a callback (the check it runs in its setter)."""
    subscription = object.__new__(Subscription)
    Subscription.callback.fset(subscription, callback)
    return subscription._callback_type


def test_guarded_two_argument_callback_gets_the_message_info():
    guard = CallbackGuard(_Logger())
    seen = []
    wrapped = guard.wrap('frame', lambda msg, info: seen.append((msg, info)))
    assert _callback_type(wrapped) == Subscription.CallbackType.WithMessageInfo
    wrapped('msg', {'received_timestamp': 1})
    assert seen == [('msg', {'received_timestamp': 1})]
    assert (_callback_type(guard.wrap('stats', lambda msg: None))
            == Subscription.CallbackType.MessageOnly)


def test_arrival_is_the_middleware_receive_time():
    clock = ROSClock()
    received_ns = clock.now().nanoseconds - 250_000_000  # the callback ran 250 ms later
    arrival = arrival_time(clock, {'source_timestamp': 1, 'received_timestamp': received_ns})
    assert arrival.nanoseconds == received_ns
    assert arrival.clock_type == clock.clock_type


def test_arrival_falls_back_to_the_clock():
    clock = ROSClock()
    far_ns = clock.now().nanoseconds - int(2 * MAX_RECEIVE_STAMP_AGE_S * 1e9)
    for info in (None, {}, {'source_timestamp': 5}, {'received_timestamp': 0},
                 {'received_timestamp': None}, {'received_timestamp': far_ns}):
        before = clock.now().nanoseconds
        assert before <= arrival_time(clock, info).nanoseconds <= clock.now().nanoseconds
    # A receive stamp "from the future" is clamped to now.
    ahead_ns = clock.now().nanoseconds + 1_000_000_000
    assert arrival_time(clock, {'received_timestamp': ahead_ns}).nanoseconds < ahead_ns


def test_simulated_time_uses_the_clock():
    clock = ROSClock()
    wall_ns = clock.now().nanoseconds
    clock._set_ros_time_is_active(True)  # what use_sim_time does; no /clock yet: time 0
    assert arrival_time(clock, {'received_timestamp': wall_ns}).nanoseconds == 0
