"""The package as a ROS user gets it: colcon build, then the real `ros2` tools on the install.

colcon builds this checkout into a temporary workspace with the venv's Kilted wheels as the
underlay; `source install/setup.bash` gives the environment every command below runs in, so
`ros2 run`, `ros2 launch`, `ros2 param`, `ros2 topic` and `ros2 interface` work on the install
space, not on the checkout. The tools come from a ROS install or ../shared/ros2 (ros2_tools.py);
without either these tests skip. The cloud runs tiny random networks (plumbing, not accuracy).
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy)
from sensor_msgs.msg import CompressedImage, Image

from cloudseg_ros.msg import ControllerState, EncodedFrame
from cloudseg_ros.ros import qos
from cloudseg_ros.ros.param_client import RemoteParams
from cloudseg_ros.tools.processes import LoggedProcess

from conftest import REPO, collect
from ros2_cli import listed_names, node_names, ros2

CLIP = os.path.join('data', 'demo', 'camvid_val_15fps.mp4')
EXECUTABLES = ('camera_replay', 'cloud', 'cloudseg', 'controller', 'edge')
# rviz2's default for a display's topic (rviz_common: reliable, keep last 5, volatile).
RVIZ2_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                       reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.VOLATILE)


def _source_files():
    """The checkout's files as a clone would have them (tracked and new, not ignored)."""
    out = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard', '-z'], cwd=REPO,
                         capture_output=True, check=True).stdout
    return [f for f in out.decode().split('\0') if f and os.path.isfile(os.path.join(REPO, f))]


def _colcon_build(colcon, ws, env):
    """`colcon build` of a copy of the checkout in ws/src; returns the install folder."""
    src = os.path.join(ws, 'src', 'cloudseg_ros')
    for rel in _source_files():
        os.makedirs(os.path.dirname(os.path.join(src, rel)), exist_ok=True)
        shutil.copy2(os.path.join(REPO, rel), os.path.join(src, rel))
    underlay = sys.prefix  # the Kilted wheels' prefix (or, on a ROS install, its own)
    build_env = dict(env, CMAKE_PREFIX_PATH=os.pathsep.join(
        filter(None, [env.get('CMAKE_PREFIX_PATH'), underlay])))
    result = subprocess.run(
        [colcon, '--log-base', 'log',
         'build', '--base-paths', 'src', '--build-base', 'build', '--install-base', 'install',
         '--event-handlers', 'console_direct+', '--cmake-args', '-DBUILD_TESTING=OFF',
         f'-DPython3_EXECUTABLE={sys.executable}'],
        cwd=ws, env=build_env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return os.path.join(ws, 'install')


def _sourced_env(install, env):
    """The environment after `source install/setup.bash`, as a user's shell has it."""
    out = subprocess.run(['bash', '-c', f'source {install}/setup.bash && env -0'], env=env,
                         capture_output=True, check=True).stdout
    return dict(item.split('=', 1) for item in out.decode().split('\0') if '=' in item)


@pytest.fixture(scope='module')
def install_env(ros2_env, tmp_path_factory):
    """(install folder, environment of a shell that sourced it)."""
    colcon = shutil.which('colcon', path=os.path.dirname(sys.executable)) or \
        shutil.which('colcon', path=ros2_env.get('PATH'))
    if colcon is None:
        pytest.skip('colcon is not installed (pip install colcon-common-extensions)')
    install = _colcon_build(colcon, str(tmp_path_factory.mktemp('ws')), ros2_env)
    return install, _sourced_env(install, ros2_env)


def test_colcon_install_has_the_ament_layout(install_env):
    install, env = install_env
    prefix = os.path.join(install, 'cloudseg_ros')
    share = os.path.join(prefix, 'share', 'cloudseg_ros')
    assert os.path.isfile(os.path.join(
        prefix, 'share', 'ament_index', 'resource_index', 'packages', 'cloudseg_ros'))
    for rel in ('launch/demo.launch.py', 'config/robot.yaml', 'config/cloudseg.rviz',
                'models/seg_icnet.pt', CLIP, 'msg/EncodedFrame.msg'):
        assert os.path.isfile(os.path.join(share, rel)), rel
    assert ros2(env, 'pkg', 'prefix', 'cloudseg_ros').stdout.strip() == prefix
    listed = ros2(env, 'pkg', 'executables', 'cloudseg_ros').stdout.split()
    assert sorted(listed[1::2]) == sorted(EXECUTABLES), listed
    # The nodes and the generated messages are imported from the install space.
    where = subprocess.run(
        [sys.executable, '-c', 'import cloudseg_ros.nodes.edge_node as n, cloudseg_ros.msg as m;'
         'print(n.__file__); print(m.__file__)'], env=env, capture_output=True, text=True,
        cwd=install)  # not the checkout: python -c imports from its working directory first
    assert where.returncode == 0, where.stderr
    assert all(line.startswith(prefix) for line in where.stdout.split()), where.stdout


def test_ros2_interface_shows_our_messages(install_env):
    _, env = install_env
    listed = ros2(env, 'interface', 'package', 'cloudseg_ros').stdout.split()
    assert sorted(listed) == ['cloudseg_ros/msg/ControllerState', 'cloudseg_ros/msg/EncodedFrame',
                              'cloudseg_ros/msg/PipelineStats']
    shown = ros2(env, 'interface', 'show', 'cloudseg_ros/msg/EncodedFrame')
    assert shown.returncode == 0, shown.stderr
    for field in ('uint64 session_id', 'uint64 seq', 'uint8[] data', 'builtin_interfaces/Time'):
        assert field in shown.stdout, field


def test_ros2_run_starts_the_installed_edge(install_env, ros_node, tmp_path):
    _, env = install_env
    edge = LoggedProcess(['ros2', 'run', 'cloudseg_ros', 'edge', '--ros-args', '-r',
                          '__ns:=/run1', '-p', 'scale:=3'], str(tmp_path), 'ros2_run',
                         base_env=env)
    try:
        params = RemoteParams(ros_node, '/run1/edge')
        assert params.wait_ready(60.0), edge.log()
        assert params.get_and_wait(['scale']) == {'scale': 3}
    finally:
        edge.stop()


def _launch(env, log_dir, name, *args):
    return LoggedProcess(['ros2', 'launch', 'cloudseg_ros', *args], log_dir, name,
                         base_env=env)


def _logs(*processes):
    return '\n'.join(f'--- {p.name}\n{p.log()[-3000:]}' for p in processes)


def test_demo_launch_brings_up_the_loop_and_masks_arrive(install_env, tiny_models, ros_node,
                                                         spin_until, tmp_path):
    _, env = install_env
    demo = _launch(env, str(tmp_path), 'demo', 'demo.launch.py', 'namespace:=/demo1',
                   'device:=cpu', f'models_dir:={tiny_models}')
    try:
        masks = collect(ros_node, '/demo1/mask', Image, qos.IMAGE)
        states = collect(ros_node, '/demo1/controller_state', ControllerState, qos.STATUS)
        assert spin_until(lambda: len(masks) >= 3 and states, 120.0), _logs(demo)
        assert (masks[-1].width, masks[-1].height, masks[-1].encoding) == (480, 360, 'mono8')
        expected = {'/demo1/camera_replay', '/demo1/edge', '/demo1/controller', '/cloud'}
        names = node_names(env, expected)
        assert expected <= names, names
        dumped = yaml.safe_load(ros2(env, 'param', 'dump', '/demo1/controller').stdout)
        shipped = yaml.safe_load(open(os.path.join(REPO, 'config', 'controller.yaml')))
        assert _own_params(dumped['/demo1/controller']['ros__parameters']) == \
            shipped['/**/controller']['ros__parameters']
    finally:
        # Ctrl-C in a terminal: SIGINT to the whole process group (launch and its nodes, which
        # then get launch's own SIGINT too); every node must end without a traceback.
        os.killpg(demo.proc.pid, signal.SIGINT)
        try:
            demo.proc.wait(timeout=20.0)
        except subprocess.TimeoutExpired:
            pass  # stop() ends it, and the log says why
        demo.stop(timeout_s=15.0)
    assert 'Traceback' not in demo.log(), demo.log()[-3000:]


def test_robot_launch_without_source_for_the_replay_says_why(install_env):
    _, env = install_env
    result = ros2(env, 'launch', 'cloudseg_ros', 'robot.launch.py', 'use_replay:=true')
    assert result.returncode != 0
    assert 'use_replay:=true needs source:=' in result.stdout + result.stderr


# Parameters every rclpy node declares itself (start_type_description_service: Jazzy and newer).
RCLPY_PARAMS = {'use_sim_time', 'start_type_description_service'}


def _own_params(params):
    """A dumped node's parameters without those rclpy declares for every node."""
    return {k: v for k, v in params.items() if k not in RCLPY_PARAMS}


@pytest.fixture(scope='module')
def fleet(install_env, tiny_models, tmp_path_factory):
    """cloud.launch.py serving two robots, each from robot.launch.py (one with a leading /)."""
    _, env = install_env
    log_dir = str(tmp_path_factory.mktemp('fleet'))
    clip = os.path.join(REPO, CLIP)
    processes = [
        _launch(env, log_dir, 'cloud', 'cloud.launch.py', "robots:=['/ra', 'rb']",
                'device:=cpu', f'models_dir:={tiny_models}'),
        _launch(env, log_dir, 'robot_a', 'robot.launch.py', 'namespace:=ra',
                'use_replay:=true', f'source:={clip}', 'use_controller:=false'),
        _launch(env, log_dir, 'robot_b', 'robot.launch.py', 'namespace:=/rb',
                'use_replay:=true', f'source:={clip}', 'use_controller:=false')]
    yield env, processes
    for process in processes:
        process.stop(timeout_s=15.0)


def test_two_robots_in_two_namespaces_get_masks(fleet, ros_node, spin_until):
    _, processes = fleet
    masks_a = collect(ros_node, '/ra/mask', Image, qos.IMAGE)
    masks_b = collect(ros_node, '/rb/mask', Image, qos.IMAGE)
    assert spin_until(lambda: len(masks_a) >= 2 and len(masks_b) >= 2, 120.0), \
        _logs(*processes)


def test_launch_files_bring_edge_and_cloud_to_active_through_transitions(fleet):
    env, processes = fleet
    names = listed_names(env, {'/cloud', '/ra/edge', '/rb/edge'}, 'lifecycle', 'nodes')
    assert {'/cloud', '/ra/edge', '/rb/edge'} <= names, names
    for node in ('/cloud', '/ra/edge', '/rb/edge'):
        state = ros2(env, 'lifecycle', 'get', node)
        assert state.stdout.startswith('active'), (node, state.stdout, state.stderr)
    logs = _logs(*processes)
    assert "Failed to make transition" not in logs, logs


def test_ros2_param_dump_round_trips_with_the_shipped_yaml(fleet, ros_node, tmp_path,
                                                           tiny_models):
    env, processes = fleet
    robot = yaml.safe_load(open(os.path.join(REPO, 'config', 'robot.yaml')))
    cloud = yaml.safe_load(open(os.path.join(REPO, 'config', 'cloud.yaml')))['/**/cloud']
    # What the launch files' arguments set; everything else must be the shipped YAML's value.
    # Launch drives the lifecycle transitions of edge and cloud itself (autostart false).
    launched = {'/ra/camera_replay': {'source': os.path.join(REPO, CLIP)},
                '/ra/edge': {'autostart': False},
                '/cloud': {'robot_namespaces': ['/ra', 'rb'], 'device': 'cpu',
                           'models_dir': tiny_models, 'autostart': False}}
    for node, listed in (('/ra/edge', robot['/**/edge']),
                         ('/ra/camera_replay', robot['/**/camera_replay']), ('/cloud', cloud)):
        result = ros2(env, 'param', 'dump', node)
        assert result.returncode == 0, result.stderr + _logs(*processes)
        dumped = _own_params(yaml.safe_load(result.stdout)[node]['ros__parameters'])
        assert dumped == dict(listed['ros__parameters'], **launched.get(node, {})), node
    # The dump, given back as a parameters file, starts an edge with the same parameters.
    dump = yaml.safe_load(ros2(env, 'param', 'dump', '/ra/edge').stdout)
    params_file = tmp_path / 'edge.yaml'
    params_file.write_text(yaml.safe_dump({'/rt/edge': dump['/ra/edge']}))
    copy = LoggedProcess(['ros2', 'run', 'cloudseg_ros', 'edge', '--ros-args', '-r',
                          '__ns:=/rt', '--params-file', str(params_file)], str(tmp_path),
                         'edge_copy', base_env=env)
    try:
        assert RemoteParams(ros_node, '/rt/edge').wait_ready(60.0), copy.log()
        again = yaml.safe_load(ros2(env, 'param', 'dump', '/rt/edge').stdout)
        assert again['/rt/edge'] == dump['/ra/edge']
    finally:
        copy.stop()


def test_ros2_param_set_takes_effect_and_out_of_range_is_refused(fleet, ros_node, spin_until):
    env, processes = fleet
    result = ros2(env, 'param', 'set', '/ra/edge', 'scale', '2')
    assert result.returncode == 0 and 'successful' in result.stdout, result.stdout
    frames = collect(ros_node, '/ra/frames', EncodedFrame, qos.SENSOR)
    assert spin_until(lambda: len(frames) >= 2, 30.0), _logs(*processes)
    assert all(f.scale == 2 and (f.width, f.height) == (240, 180) for f in frames[1:])
    refused = ros2(env, 'param', 'set', '/ra/edge', 'scale', '7')
    assert 'Setting parameter failed' in refused.stderr, refused.stdout + refused.stderr
    assert 'out of range' in refused.stderr
    assert 'Integer value is: 2' in ros2(env, 'param', 'get', '/ra/edge', 'scale').stdout
    assert 'Integer value is: 4' in ros2(env, 'param', 'get', '/rb/edge', 'scale').stdout


def test_ros2_topic_hz_sees_masks(fleet, tmp_path):
    env, _ = fleet
    hz = LoggedProcess(['ros2', 'topic', 'hz', '/rb/mask'], str(tmp_path), 'hz', base_env=env)
    try:
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline and 'average rate' not in hz.log():
            time.sleep(0.5)
    finally:
        hz.stop()
    assert 'average rate' in hz.log(), hz.log()


def _rosbag2_qos(node, topic):
    """The QoS rosbag2 records with by default: adapted to what the publishers offer.

    Reliable only if every publisher is reliable, transient local only if every one is
    (rosbag2_transport's adapt_request_to_offers), keep last 10.
    """
    offers = node.get_publishers_info_by_topic(topic)
    assert offers, f'no publisher on {topic}'
    reliable = all(o.qos_profile.reliability == ReliabilityPolicy.RELIABLE for o in offers)
    latched = all(o.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for o in offers)
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=10,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


IMAGE_TOPICS = (('image_raw', Image), ('image_lowres/compressed', CompressedImage),
                ('mask', Image), ('mask_color', Image), ('mask/compressed', CompressedImage))


def test_rviz2_and_rosbag2_default_qos_receive_every_image_topic(fleet, ros_node, spin_until):
    _, processes = fleet
    received = {}
    for name, msg_type in IMAGE_TOPICS:
        topic = f'/rb/{name}'
        assert spin_until(lambda: ros_node.get_publishers_info_by_topic(topic), 30.0), topic
        bag_qos = _rosbag2_qos(ros_node, topic)
        # REP-2003: image publishers are reliable, so a recording is reliable too.
        assert bag_qos.reliability == ReliabilityPolicy.RELIABLE, topic
        for tool, profile in (('rviz2', RVIZ2_QOS), ('rosbag2', bag_qos)):
            received[tool, topic] = collect(ros_node, topic, msg_type, profile)
    assert spin_until(lambda: all(len(r) >= 2 for r in received.values()), 60.0), \
        {k: len(v) for k, v in received.items()}


def _rviz_topics():
    """(topic, message type) of every display in config/cloudseg.rviz."""
    config = yaml.safe_load(open(os.path.join(REPO, 'config', 'cloudseg.rviz')))
    topics = []
    for display in config['Visualization Manager']['Displays']:
        topic = display['Topic']['Value']
        assert not topic.startswith('/'), f'{topic}: must follow the namespace (relative)'
        # rviz2's Image display picks the transport from the topic's last name.
        compressed = display['Class'] == 'rviz_default_plugins/Image' and \
            topic.endswith('/compressed')
        topics.append((topic, 'sensor_msgs/msg/CompressedImage' if compressed
                       else 'sensor_msgs/msg/Image'))
    return topics


def _launch_file_topics(env):
    """(topic, message type) named by the launch files: the camera topic's default."""
    shown = ros2(env, 'launch', 'cloudseg_ros', 'robot.launch.py', '--show-args').stdout
    match = re.search(r"'camera_topic':\n(?:.*\n)*?\s+\(default: '([^']*)'\)", shown)
    assert match, shown
    return [(match.group(1), 'sensor_msgs/msg/Image')]


def test_topics_in_rviz_config_and_launch_files_are_published(fleet, ros_node, spin_until):
    env, _ = fleet
    named = _rviz_topics() + _launch_file_topics(env)
    assert ('image_lowres/compressed', 'sensor_msgs/msg/CompressedImage') in named
    for topic, msg_type in named:
        resolved = f'/ra/{topic}'
        assert spin_until(lambda: ros_node.get_publishers_info_by_topic(resolved), 30.0), \
            f'nothing publishes {resolved} (named in rviz/launch files)'
        types = {p.topic_type for p in ros_node.get_publishers_info_by_topic(resolved)}
        assert types == {msg_type}, (resolved, types)


def test_every_launch_file_takes_use_sim_time_and_gives_it_to_its_nodes(install_env, tmp_path,
                                                                        ros_node):
    _, env = install_env
    for name in ('robot.launch.py', 'cloud.launch.py', 'demo.launch.py'):
        shown = ros2(env, 'launch', 'cloudseg_ros', name, '--show-args').stdout
        assert "'use_sim_time':" in shown, name
    robot = _launch(env, str(tmp_path), 'robot_sim', 'robot.launch.py', 'namespace:=sim',
                    'use_replay:=true', f'source:={os.path.join(REPO, CLIP)}',
                    'use_sim_time:=true')
    try:
        for node in ('camera_replay', 'edge', 'controller'):
            params = RemoteParams(ros_node, f'/sim/{node}')
            assert params.wait_ready(60.0), robot.log()
            assert params.get_and_wait(['use_sim_time']) == {'use_sim_time': True}, node
    finally:
        robot.stop(timeout_s=15.0)
