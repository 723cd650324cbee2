"""Publish the nodes' health on `/diagnostics` (diagnostic_msgs/DiagnosticArray).

The absolute topic is the ROS convention: rqt_robot_monitor, the diagnostic aggregator and
Foxglove's diagnostics panels read `/diagnostics` whatever the node's namespace. The content
(levels, messages, values) comes from core/health.py; this module only converts and times it.
"""
from typing import Callable, List

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node

from cloudseg_ros.core.health import StatusReport
from cloudseg_ros.ros import qos
from cloudseg_ros.ros.params import ParamSpec

TOPIC = '/diagnostics'
DIAGNOSTICS_PARAMS = (
    ParamSpec('diagnostics_period_s', 1.0,
              'Seconds between two health reports on /diagnostics (0 = off).', 0.0, 60.0,
              read_only=True),
)


def status_msg(report: StatusReport) -> DiagnosticStatus:
    """One StatusReport as a DiagnosticStatus (level as the message's byte)."""
    return DiagnosticStatus(level=bytes([report.level]), name=report.name,
                            message=report.message, hardware_id=report.hardware_id,
                            values=[KeyValue(key=k, value=v) for k, v in report.values])


class DiagnosticsPublisher:
    """Every `diagnostics_period_s`, publish what `collect()` reports (nothing when 0)."""

    def __init__(self, node: Node, period_s: float,
                 collect: Callable[[], List[StatusReport]], callback_group=None) -> None:
        self._node = node
        self._collect = collect
        self._pub = None
        if period_s > 0:
            self._pub = node.create_publisher(DiagnosticArray, TOPIC, qos.DIAGNOSTICS)
            node.create_timer(period_s, self._publish, callback_group=callback_group)

    def _publish(self) -> None:
        msg = DiagnosticArray()
        msg.header.stamp = self._node.get_clock().now().to_msg()
        msg.status = [status_msg(report) for report in self._collect()]
        self._pub.publish(msg)
