"""Wall-clock timers and a warning for `use_sim_time` without a `/clock`.

With `use_sim_time:=true` a node's ROS clock reads 0 until the first `/clock` message and then
only moves when `/clock` does. A processing timer on that clock stops with it (the cloud node
published 0.05 masks/s with no clock), so our nodes run their internal timers and rate limits on
the steady clock: processing is driven by the messages that arrive, never by simulated time.
The ROS clock is still what stamps and latencies are measured with, so that a bag played with
`--clock` reads right. `SimClockWatch` says so in the log, throttled, while sim time is enabled
and no `/clock` has arrived.
"""
import time

from rclpy.clock import Clock, ClockType
from rclpy.node import Node

WARN_AFTER_S = 3.0      # discovery of a /clock publisher takes a moment
WARN_PERIOD_S = 10.0


def steady_clock() -> Clock:
    """The clock for a node's internal timers: never stopped by simulated time."""
    return Clock(clock_type=ClockType.STEADY_TIME)


class SimClockWatch:
    """Warns every `WARN_PERIOD_S` while `use_sim_time` is true and no `/clock` has come."""

    def __init__(self, node: Node, callback_group=None) -> None:
        self._node = node
        self._start_s = time.monotonic()
        self._timer = node.create_timer(1.0, self._check, callback_group=callback_group,
                                        clock=steady_clock())

    def waiting_for_clock(self) -> bool:
        """Whether sim time is enabled and the ROS clock has not received a time yet."""
        clock = self._node.get_clock()
        return clock.ros_time_is_active and clock.now().nanoseconds == 0

    def _check(self) -> None:
        waited_s = time.monotonic() - self._start_s
        if waited_s < WARN_AFTER_S or not self.waiting_for_clock():
            return
        self._node.get_logger().warn(
            f'use_sim_time is true but no /clock message has arrived in {waited_s:.0f} s: '
            'time stamps and latencies read 0 until one does. Frames are still processed '
            '(timers and rate limits run on the steady clock). Publish /clock (e.g. '
            '`ros2 bag play --clock`) or set use_sim_time:=false.',
            throttle_duration_sec=WARN_PERIOD_S)
