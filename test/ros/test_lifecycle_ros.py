"""Edge and cloud as managed nodes, driven by the real `ros2 lifecycle` across processes.

The nodes start with `autostart: false` (what the launch files and a lifecycle manager use):
`ros2 lifecycle nodes` lists them, nothing flows while they are unconfigured, `configure` +
`activate` make masks flow, `deactivate` drops the edge's camera subscription, `cleanup` its
uplink publisher, `shutdown` finalizes the cloud. A missing model fails `configure` with the
reason in the log; the node stays alive and `unconfigured`, and configures once the files are
there. The tools come from a ROS install or ../shared/ros2 (ros2_tools.py), else these skip.
The last test checks ManagedNode's bookkeeping in this process (no tools needed).
"""
import os
import time

import pytest
import rclpy
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image
from std_msgs.msg import Empty

from cloudseg_ros.ros import qos
from cloudseg_ros.ros.lifecycle import ManagedNode, remote_state
from cloudseg_ros.ros.param_client import RemoteParams
from cloudseg_ros.ros.params import ParamSpec
from cloudseg_ros.tools.demo import wait_for_cloud

from conftest import SceneCamera, collect
from ros2_cli import listed_names, ros2

torch = pytest.importorskip('torch')
CLOUD = 'cloudseg_ros.nodes.cloud_node'
EDGE = 'cloudseg_ros.nodes.edge_node'


def _state(env, node) -> str:
    """`ros2 lifecycle get NODE`: the state's label ('unconfigured', 'active', ...)."""
    result = ros2(env, 'lifecycle', 'get', node)
    return (result.stdout.split() or [result.stderr.strip()])[0]


def _transition(env, node, transition) -> bool:
    """`ros2 lifecycle set NODE TRANSITION`; whether it succeeded."""
    result = ros2(env, 'lifecycle', 'set', node, transition, timeout_s=120.0)
    return 'Transitioning successful' in result.stdout


def _publish_for(camera, spin_until, seconds) -> None:
    """Publish camera images for `seconds`, spinning the test node."""
    deadline = time.monotonic() + seconds
    spin_until(lambda: camera.publish() or time.monotonic() > deadline, seconds + 5.0)


def test_ros2_lifecycle_brings_edge_and_cloud_up_and_down(launch, ros_node, spin_until,
                                                          ros2_env, tiny_models):
    env = ros2_env
    cloud = launch(CLOUD, namespace='/lcc', params={
        'robot_namespaces': ['/lc1'], 'models_dir': tiny_models, 'device': 'cpu',
        'autostart': False})
    edge = launch(EDGE, namespace='/lc1', params={'useful_threshold': 0.0, 'autostart': False})
    logs = lambda: cloud.log()[-3000:] + edge.log()[-3000:]  # noqa: E731
    names = listed_names(env, {'/lcc/cloud', '/lc1/edge'}, 'lifecycle', 'nodes')
    assert {'/lcc/cloud', '/lc1/edge'} <= names, (names, logs())
    assert _state(env, '/lcc/cloud') == _state(env, '/lc1/edge') == 'unconfigured'
    camera = SceneCamera(ros_node, '/lc1')
    masks = collect(ros_node, '/lc1/mask', Image, qos.IMAGE)
    _publish_for(camera, spin_until, 2.0)
    assert not masks and ros_node.count_subscribers('/lc1/image_raw') == 0

    for node in ('/lcc/cloud', '/lc1/edge'):
        for transition in ('configure', 'activate'):
            assert _transition(env, node, transition), (node, transition, logs())
        assert _state(env, node) == 'active'
    assert spin_until(lambda: camera.publish() or len(masks) >= 3, 90.0), logs()

    assert _transition(env, '/lc1/edge', 'deactivate') and _state(env, '/lc1/edge') == 'inactive'
    assert spin_until(lambda: ros_node.count_subscribers('/lc1/image_raw') == 0, 10.0)
    assert ros_node.count_publishers('/lc1/frames') == 1  # configured: the uplink stays open
    assert _transition(env, '/lc1/edge', 'cleanup')
    assert _state(env, '/lc1/edge') == 'unconfigured'
    assert spin_until(lambda: ros_node.count_publishers('/lc1/frames') == 0, 10.0)
    assert _transition(env, '/lcc/cloud', 'deactivate')
    assert _transition(env, '/lcc/cloud', 'shutdown')
    assert _state(env, '/lcc/cloud') == 'finalized'
    assert spin_until(lambda: ros_node.count_publishers('/lc1/mask') == 0, 10.0)
    assert cloud.alive() and edge.alive()
    assert 'Traceback' not in logs(), logs()


def test_configure_fails_on_a_missing_model_and_the_node_stays_unconfigured(
        launch, ros_node, ros2_env, tmp_path):
    env = ros2_env
    models = tmp_path / 'models_not_there_yet'
    # autostart (the default, as `ros2 run` starts it): configure is tried at start and fails.
    cloud = launch(CLOUD, namespace='/lcm', params={
        'robot_namespaces': ['/lc2'], 'models_dir': str(models), 'device': 'cpu'})
    assert '/lcm/cloud' in listed_names(env, {'/lcm/cloud'}, 'lifecycle', 'nodes'), cloud.log()
    assert _state(env, '/lcm/cloud') == 'unconfigured', cloud.log()
    assert 'configure failed' in cloud.log() and str(models) in cloud.log(), cloud.log()
    assert not _transition(env, '/lcm/cloud', 'configure')
    assert _state(env, '/lcm/cloud') == 'unconfigured'
    assert cloud.alive() and ros_node.count_publishers('/lc2/mask') == 0
    params = RemoteParams(ros_node, '/lcm/cloud')  # parameters still answer
    assert params.wait_ready(30.0)
    assert params.get_and_wait(['models_dir']) == {'models_dir': str(models)}
    assert remote_state(ros_node, '/lcm/cloud', 10.0) == 'unconfigured'
    assert not wait_for_cloud(ros_node, cloud, '/lcm', 30.0)  # `cloudseg demo` stops, says why
    # The weights arrive (e.g. synced after boot): configure again, no restart.
    from cloudseg_ros.inference.model_files import write_tiny_models
    write_tiny_models(str(models))
    assert _transition(env, '/lcm/cloud', 'configure'), cloud.log()[-3000:]
    assert _transition(env, '/lcm/cloud', 'activate')
    assert _state(env, '/lcm/cloud') == 'active'
    assert wait_for_cloud(ros_node, cloud, '/lcm', 30.0)
    assert 'Traceback' not in cloud.log(), cloud.log()


class _ProbeNode(ManagedNode):
    """A managed node that needs a file, publishes, ticks and subscribes once active."""

    def __init__(self) -> None:
        super().__init__(f'lifecycle_probe_{os.getpid()}',
                         (ParamSpec('path', '', 'A file the node needs.'),))
        self.ticks = 0
        self.released = 0
        self.fail_activate = False

    def configure(self, values) -> None:
        open(values['path']).close()  # a missing file fails configure
        self.out = self.create_publisher(Empty, 'probe_out', 1)
        self.create_timer(0.01, self._tick)

    def _tick(self) -> None:
        self.ticks += 1

    def activate(self) -> None:
        self.inp = self.create_subscription(Empty, 'probe_in', lambda _: None, 1)
        if self.fail_activate:
            raise RuntimeError('device lost')

    def release(self) -> None:
        self.released += 1


def _ticks_after(node, seconds) -> int:
    """Spin `node` for `seconds`; how often its timer fired meanwhile."""
    before, deadline = node.ticks, time.monotonic() + seconds
    while time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.02)
    return node.ticks - before


def test_managed_node_builds_on_configure_runs_timers_only_when_active_and_cleans_up(
        ros_node, tmp_path):
    node = _ProbeNode()
    try:
        baseline = (set(node.publishers), set(node.subscriptions), set(node.timers))
        node.set_parameters([Parameter('path', value=str(tmp_path / 'missing'))])
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert node.released == 1 and set(node.timers) == baseline[2]
        (tmp_path / 'present').write_text('')
        node.set_parameters([Parameter('path', value=str(tmp_path / 'present'))])
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.out in set(node.publishers) and _ticks_after(node, 0.3) == 0
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert node.is_active and node.inp in set(node.subscriptions)
        assert _ticks_after(node, 0.3) > 0
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert not node.is_active and _ticks_after(node, 0.3) == 0
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        assert (set(node.publishers), set(node.subscriptions), set(node.timers)) == baseline
        assert node.released == 2
        assert node.trigger_shutdown() == TransitionCallbackReturn.SUCCESS
    finally:
        node.destroy_node()


def test_managed_node_failing_activate_is_logged_released_and_can_configure_again(
        ros_node, tmp_path):
    node = _ProbeNode()
    try:
        baseline = (set(node.publishers), set(node.subscriptions), set(node.timers))
        (tmp_path / 'present').write_text('')
        node.set_parameters([Parameter('path', value=str(tmp_path / 'present'))])
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        node.fail_activate = True
        assert node.trigger_activate() == TransitionCallbackReturn.ERROR
        assert not node.is_active and node.released == 1  # on_error: back to unconfigured
        assert (set(node.publishers), set(node.subscriptions), set(node.timers)) == baseline
        node.fail_activate = False
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    finally:
        node.destroy_node()
