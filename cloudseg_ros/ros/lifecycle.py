"""Managed (lifecycle) nodes: the cloud and the edge, on Humble, Jazzy and Kilted.

A managed node is constructed with its parameters and services only. `configure` reads the
parameters, checks them and loads what the node needs (networks, codecs, the uplink): anything
wrong fails the transition with one error line saying why, and the node stays `unconfigured`,
alive, answering `ros2 lifecycle get` and `ros2 param get`. `activate` starts the streams,
`deactivate` stops them, `cleanup` releases everything, `shutdown` does so from any state.

`ManagedNode` keeps that bookkeeping out of the nodes, which implement four hooks:
`configure(values)` (raise with the reason), `activate()`, `deactivate()` and `release()`
(idempotent: stop threads, close links). Timers created after construction (diagnostics, the
sim-clock watch, the zenoh link) run only while the node is active; publishers, subscriptions
and timers created after construction are destroyed on cleanup, whoever created them (robot
streams that joined live included), so a second `configure` starts from a clean node.

`autostart` (parameter, default true): `autostart(node)` configures and activates the node at
start, so `ros2 run`, `cloudseg demo` and scripts get a node that comes up as a plain one does.
Launch files set it false and drive the transitions themselves (launch_ros LifecycleNode +
ChangeState events), as a lifecycle manager would.

Only API present in the rclpy of Humble, Jazzy and Kilted is used: rclpy.lifecycle's
LifecycleNode, LifecycleState and TransitionCallbackReturn, `trigger_configure` /
`trigger_activate`, and Node's `publishers`, `subscriptions` and `timers`. `remote_state()`
asks another node its state, as `ros2 lifecycle get` does (scripts and tests).
"""
import time
from typing import Any, Dict, Sequence

import rclpy
from lifecycle_msgs.srv import GetState
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node

from cloudseg_ros.core.peer_input import printable
from cloudseg_ros.ros.param_client import forget_request
from cloudseg_ros.ros.params import ParamSpec, declare_params

RETRY_S = 1.0  # remote_state: a lost request is sent again after this
MAX_REASON_CHARS = 500  # an exception text may quote a long path or a peer's string
LIFECYCLE_PARAMS = (
    ParamSpec('autostart', True,
              'Configure and activate at start without a lifecycle manager (false: stay '
              'unconfigured until `ros2 lifecycle set` or a launch file changes the state).',
              read_only=True),
)


def failure_reason(err: BaseException) -> str:
    """One printable line for the log: the exception's type and text."""
    return printable(f'{type(err).__name__}: {err}', MAX_REASON_CHARS)


class ManagedNode(LifecycleNode):
    """A lifecycle node whose subclass only says how to configure, activate and release."""

    def __init__(self, name: str, specs: Sequence[ParamSpec]) -> None:
        """Declare `specs` and `autostart`; nothing else is built before `configure`."""
        super().__init__(name)
        self._specs = tuple(specs) + LIFECYCLE_PARAMS
        declare_params(self, self._specs)
        self.is_active = False
        self._baseline = self._entities()  # parameter services, rosout, lifecycle services

    # Hooks for the subclass.
    def configure(self, values: Dict[str, Any]) -> None:
        """Build the node from `values` ({parameter: value}); raise with the reason if not."""

    def activate(self) -> None:
        """Start the streams (after `configure` succeeded)."""

    def deactivate(self) -> None:
        """Stop the streams (the node keeps what `configure` built)."""

    def release(self) -> None:
        """Stop threads and close links opened by `configure`; safe to call twice."""

    # Transitions (rclpy calls them from the change_state service or trigger_*()).
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Read the parameters as they are now and build the node; FAILURE says why."""
        values = {spec.name: self.get_parameter(spec.name).value for spec in self._specs}
        try:
            self.configure(values)
        except Exception as err:  # noqa: B902 - any failure must leave a reason, not a crash
            self.get_logger().error(
                f'configure failed: {failure_reason(err)}. The node stays unconfigured: fix '
                f'the parameters or files, then `ros2 lifecycle set '
                f'{self.get_fully_qualified_name()} configure` (or restart it).')
            self._release_all()
            return TransitionCallbackReturn.FAILURE
        self._set_timers(running=False)
        self.get_logger().info('configured (inactive)')
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Start the streams and the timers."""
        self._run_hook('activate', self.activate)
        self._set_timers(running=True)
        self.is_active = True
        self.get_logger().info('active')
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop the streams and the timers."""
        self.is_active = False
        self._run_hook('deactivate', self.deactivate)
        self._set_timers(running=False)
        self.get_logger().info('inactive')
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything `configure` built: back to unconfigured."""
        self._release_all()
        self.get_logger().info('cleaned up (unconfigured)')
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """From any state: release everything (finalized)."""
        self._release_all()
        self.get_logger().info('shut down (finalized)')
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """A transition raised: release everything and go back to unconfigured."""
        self._release_all()
        self.get_logger().error(f'error while {state.label}: released, now unconfigured')
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        """Stop the threads (whatever the state), then the node."""
        self.is_active = False
        self.release()
        super().destroy_node()

    def _run_hook(self, name: str, hook) -> None:
        """Run a hook; an exception is logged with its reason (rclpy would not say why).

        It still propagates: rclpy then runs `on_error`, which releases everything.
        """
        try:
            hook()
        except Exception as err:  # noqa: B902 - logged here, handled by rclpy + on_error
            self.get_logger().error(f'{name} failed: {failure_reason(err)}')
            raise

    def _entities(self) -> Dict[str, set]:
        return {'subscriptions': set(self.subscriptions), 'timers': set(self.timers),
                'publishers': set(self.publishers)}

    def _set_timers(self, running: bool) -> None:
        """Pause or resume the timers created after construction."""
        for timer in set(self.timers) - self._baseline['timers']:
            if running:
                timer.reset()
            else:
                timer.cancel()

    def _release_all(self) -> None:
        """`release()`, then destroy what was created after construction (inputs first)."""
        self.is_active = False
        try:
            self.release()
        finally:
            for sub in set(self.subscriptions) - self._baseline['subscriptions']:
                self.destroy_subscription(sub)
            for timer in set(self.timers) - self._baseline['timers']:
                self.destroy_timer(timer)
            for pub in set(self.publishers) - self._baseline['publishers']:
                self.destroy_publisher(pub)


def autostart(node: ManagedNode) -> ManagedNode:
    """Configure and activate `node` now if its `autostart` parameter is true; return it.

    A failed configure leaves the node unconfigured and alive (its log says why).
    """
    if node.get_parameter('autostart').value:
        if node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            node.trigger_activate()
    return node


def remote_state(node: Node, target: str, timeout_s: float) -> str:
    """The lifecycle state label of node `target` ('active', ...), '' without an answer.

    Spins `node` until the answer comes (scripts and tests, not callbacks). The request is
    repeated every `RETRY_S`: a fresh client's first request can be lost while the server's
    reply writer is still matching it (seen with config/fastdds_robot.xml: one call in two).
    """
    deadline = time.monotonic() + timeout_s
    client = node.create_client(GetState, f"{target.rstrip('/')}/get_state")
    try:
        if not client.wait_for_service(timeout_sec=timeout_s):
            return ''
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return ''
            future = client.call_async(GetState.Request())
            rclpy.spin_until_future_complete(node, future, timeout_sec=min(RETRY_S, remaining))
            if future.done():
                return future.result().current_state.label
            forget_request(client, future)
    finally:
        node.destroy_client(client)
