"""Set another node's parameters through its parameter services (what `ros2 param set` does).

Used by the controller to retune the edge node and by the tests. Calls are asynchronous so a
callback never blocks on the network; `set_and_wait` is for scripts and tests.
"""
import time
from typing import Any, Dict, List

import rclpy
from rcl_interfaces.msg import Parameter as ParameterMsg, SetParametersResult
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.task import Future


class RemoteParams:
    """Client of one remote node's `set_parameters` / `get_parameters` services."""

    def __init__(self, node: Node, target: str) -> None:
        """`target` is the remote node's fully qualified name, e.g. '/robot1/edge'."""
        self._node = node
        self.target = target.rstrip('/')
        self._set = node.create_client(SetParameters, f'{self.target}/set_parameters')
        self._get = node.create_client(GetParameters, f'{self.target}/get_parameters')

    def ready(self) -> bool:
        """Whether the remote services are reachable now."""
        return self._set.service_is_ready() and self._get.service_is_ready()

    def wait_ready(self, timeout_s: float) -> bool:
        """Block until the remote node answers (scripts and tests only).

        Its services are discovered as soon as it exists, but they answer only once it spins:
        a managed node starting on a loaded machine can take seconds to configure first. So a
        get of `use_sim_time` (every node has it) is repeated each second until answered.
        """
        deadline = time.monotonic() + timeout_s
        if not (self._set.wait_for_service(timeout_sec=timeout_s)
                and self._get.wait_for_service(timeout_sec=max(0.0, deadline - time.monotonic()))):
            return False
        while time.monotonic() < deadline:
            future = self.get_async(['use_sim_time'])
            rclpy.spin_until_future_complete(
                self._node, future, timeout_sec=min(1.0, max(0.0, deadline - time.monotonic())))
            if future.done():
                return True
            forget_request(self._get, future)
        return False

    def set_async(self, values: Dict[str, Any]) -> Future:
        """Request the change; the future's result is a SetParameters.Response (one per value)."""
        request = SetParameters.Request()
        request.parameters = [Parameter(name, value=value).to_parameter_msg()
                              for name, value in values.items()]
        return self._set.call_async(request)

    def get_async(self, names: List[str]) -> Future:
        """Request current values; result is a GetParameters.Response."""
        return self._get.call_async(GetParameters.Request(names=list(names)))

    def set_and_wait(self, values: Dict[str, Any],
                     timeout_s: float = 5.0) -> List[SetParametersResult]:
        """Set values and spin the node until the answer comes (not for use in callbacks)."""
        future = self.set_async(values)
        rclpy.spin_until_future_complete(self._node, future, timeout_sec=timeout_s)
        if not future.done():
            raise TimeoutError(f'no answer from {self.target}/set_parameters in {timeout_s} s')
        return list(future.result().results)

    def get_and_wait(self, names: List[str], timeout_s: float = 5.0) -> Dict[str, Any]:
        """Read values and spin until the answer comes (not for use in callbacks)."""
        future = self.get_async(names)
        rclpy.spin_until_future_complete(self._node, future, timeout_sec=timeout_s)
        if not future.done():
            raise TimeoutError(f'no answer from {self.target}/get_parameters in {timeout_s} s')
        return values_by_name(names, future.result())


def forget_request(client, future: Future) -> None:
    """Drop an unanswered request so a late answer is not kept (Client.remove_pending_request,
    absent from older rclpy releases: there the pending entry only stays until answered)."""
    remove = getattr(client, 'remove_pending_request', None)
    if remove is not None:
        remove(future)


def values_by_name(names: List[str], response: GetParameters.Response) -> Dict[str, Any]:
    """{name: value} of a get_parameters answer; None for a parameter the node does not have."""
    return {name: Parameter.from_parameter_msg(ParameterMsg(name=name, value=value)).value
            for name, value in zip(names, response.values)}
