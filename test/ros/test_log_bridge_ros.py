"""Python logging and warnings of the engine reach /rosout through the node's logger."""
import logging
import warnings

from rcl_interfaces.msg import Log
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from cloudseg_ros.ros.log_bridge import forward_python_logs

CLOUD = 'cloudseg_ros.nodes.cloud_node'
# /rosout is reliable and transient-local (the last messages of a node that already logged).
ROSOUT_QOS = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.TRANSIENT_LOCAL)


def rosout(ros_node) -> list:
    """Every /rosout message the test node receives from now on."""
    received = []
    ros_node.create_subscription(Log, '/rosout', received.append, ROSOUT_QOS)
    return received


def test_engine_warning_from_a_cloud_process_reaches_rosout(launch, ros_node, spin_until,
                                                            tiny_models):
    """cuda_graphs on a CPU engine: the engine warns through Python logging, in the node."""
    logs = rosout(ros_node)
    cloud = launch(CLOUD, namespace='/lb1', params={
        'robot_namespaces': ['/lb1'], 'models_dir': tiny_models, 'device': 'cpu',
        'cuda_graphs': True, 'warmup_width': 64, 'warmup_height': 48})

    def engine_warned():
        return [m for m in logs if m.name == 'lb1.cloud' and m.level == Log.WARN
                and 'cuda_graphs needs a CUDA device' in m.msg]

    assert spin_until(engine_warned, 60.0), cloud.log()
    assert engine_warned()[0].msg.startswith('[cloudseg_ros.inference.engine] ')


def test_levels_and_python_warnings_are_forwarded_then_detached(ros_node, spin_until):
    logs = rosout(ros_node)
    handler = forward_python_logs(ros_node)
    try:
        engine_log = logging.getLogger('cloudseg_ros.inference.engine')
        engine_log.info('engine info')
        engine_log.warning('engine warning')
        engine_log.error('engine error')
        engine_log.debug('engine debug')  # below the node logger's INFO: dropped
        warnings.warn('torch says so', UserWarning)
    finally:
        handler.detach()
    engine_log.warning('after detach')
    name = ros_node.get_logger().name

    def levels():
        return {m.msg.split('] ', 1)[-1].splitlines()[0]: m.level
                for m in logs if m.name == name}

    wanted = {'engine info': Log.INFO, 'engine warning': Log.WARN, 'engine error': Log.ERROR}
    assert spin_until(lambda: wanted.items() <= levels().items()
                      and any('torch says so' in m for m in levels()), 10.0), levels()
    spin_until(lambda: False, 0.5)
    assert 'engine debug' not in levels() and 'after detach' not in levels()
    assert not logging.getLogger('cloudseg_ros').handlers
