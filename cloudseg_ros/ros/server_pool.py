"""The cloud node's side of a server pool (`server_pool` parameter): heartbeats over ROS.

Every cloud node of pool NAME publishes a heartbeat (std_msgs/String, JSON:
`core/server_pool.Heartbeat`) on the absolute topic `/cloudseg/server_pool/NAME` every
`server_pool_lease_s / 8` and listens to the others'. The topic travels like any other: DDS
discovery on a LAN, a Fast DDS discovery server or the zenoh router across sites; there is no
broker of ours. `robot_namespaces` is then the whole fleet, the same list on every server; each
server serves the part that `core/server_pool.ServerPool` gives it, by calling the node's
`serve(namespaces)` (the node's own join / leave), before it announces that view. The logic
(lease, start-up hold-off, agreement, fence) and its guarantees are in core/server_pool.py.
Its state goes to `/diagnostics` as `cloudseg cloud: server pool NAME` (WARN while fenced or
waiting for the other servers to agree).
"""
import time
import uuid
from typing import Callable, Optional, Sequence

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from std_msgs.msg import String

from cloudseg_ros.core.server_pool import Heartbeat, PoolConfig, ServerPool
from cloudseg_ros.ros import qos
from cloudseg_ros.ros.clock import steady_clock
from cloudseg_ros.ros.diagnostics import DiagnosticsPublisher

TOPIC_PREFIX = '/cloudseg/server_pool/'


class ServerPoolLink:
    """Heartbeats in and out; applies the robots this server owns through `serve`."""

    def __init__(self, node: Node, pool_name: str, lease_s: float, fleet: Sequence[str],
                 serve: Callable[[Sequence[str]], None], diagnostics_period_s: float) -> None:
        self._node, self._serve = node, serve
        # Its own group: heartbeats stay on time while frame callbacks keep the others busy.
        group = MutuallyExclusiveCallbackGroup()
        name = node.get_fully_qualified_name()
        config = PoolConfig.for_lease(lease_s)
        self.pool = ServerPool(name, uuid.uuid4().hex[:12], config, time.monotonic())
        self.set_fleet(fleet)
        self._why = ''
        topic = TOPIC_PREFIX + pool_name
        self._pub = node.create_publisher(String, topic, qos.SERVER_POOL)
        self._sub = node.create_subscription(
            String, topic, node.guard.wrap('server pool: heartbeat', self._on_heartbeat),
            qos.SERVER_POOL, callback_group=group)
        self._timer = node.create_timer(config.heartbeat_s,
                                        node.guard.wrap('server pool: tick', self._tick),
                                        callback_group=group, clock=steady_clock())
        self._diagnostics = DiagnosticsPublisher(
            node, diagnostics_period_s, lambda: [self.pool.health(pool_name)], group)
        node.get_logger().info(
            f"server pool '{pool_name}' ({topic}) as {name}: lease {lease_s} s, heartbeat "
            f'{config.heartbeat_s} s, start-up hold-off {config.startup_s} s, fleet of '
            f'{len(fleet)} robot(s)')

    def set_fleet(self, fleet: Sequence[str]) -> None:
        """The robots of the whole pool ('' = this node's namespace)."""
        own = self._node.get_namespace()
        self.pool.set_fleet([name or own for name in fleet])

    def _on_heartbeat(self, msg: String) -> None:
        try:
            heartbeat = Heartbeat.from_json(msg.data)
        except ValueError as err:
            self._node.get_logger().warn(f'server pool: heartbeat ignored: {str(err)[:200]}',
                                         throttle_duration_sec=10.0)
            return
        self.pool.on_heartbeat(heartbeat, time.monotonic())

    def _tick(self) -> None:
        """Update the view, apply what to serve, then announce it (in that order)."""
        now_s = time.monotonic()
        before = self.pool.serving
        serving = self.pool.update(now_s)
        if serving != before:
            self._serve(sorted(serving))
        if serving != before or self.pool.why != self._why:
            self._node.get_logger().info(
                f"server pool: serving {len(serving)} robot(s) {sorted(serving)[:16]} "
                f"({self.pool.why}; servers {sorted(self.pool.view)})")
            self._why = self.pool.why
        self._pub.publish(String(data=self.pool.heartbeat(now_s).to_json()))


def attach_server_pool(node: Node, values, fleet: Sequence[str],
                       serve: Callable[[Sequence[str]], None]) -> Optional[ServerPoolLink]:
    """The pool link when `server_pool` is set, else None (the node serves its whole list)."""
    if not values['server_pool']:
        return None
    return ServerPoolLink(node, values['server_pool'], values['server_pool_lease_s'], fleet,
                          serve, values['diagnostics_period_s'])
