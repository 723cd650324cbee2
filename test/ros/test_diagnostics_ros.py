"""/diagnostics over real DDS: cloud (per robot), edge and controller health reports.

A serving robot is OK with masks counted, a robot that sends nothing is OK and waiting, and every
status carries the documented keys. (A cloud whose model does not load fails `configure` and
stays unconfigured: test_lifecycle_ros.py.)
"""
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

from cloudseg_ros.ros import qos

from conftest import SceneCamera, collect  # noqa: E402

torch = pytest.importorskip('torch')
CLOUD = 'cloudseg_ros.nodes.cloud_node'
EDGE = 'cloudseg_ros.nodes.edge_node'
CONTROLLER = 'cloudseg_ros.nodes.controller_node'
CLOUD_KEYS = {'masks_per_s', 'latency_p50_ms', 'frames_rejected', 'frames_superseded',
              'frames_lost', 'engine'}
EDGE_KEYS = {'frames_in_per_s', 'frames_out_per_s', 'uplink_kbps', 'scale', 'codec', 'quality',
             'frames_rejected'}
CONTROLLER_KEYS = {'bandwidth_estimate_kbps', 'entry', 'last_switch_reason'}


def _latest(arrays, name):
    """The newest status called `name` received so far, or None."""
    for array in reversed(list(arrays)):
        for status in array.status:
            if status.name == name:
                return status
    return None


def _values(status) -> dict:
    return {kv.key: kv.value for kv in status.values}


def _serving(status) -> bool:
    return (status is not None and status.level == DiagnosticStatus.OK
            and int(_values(status)['masks']) > 0)


def test_diagnostics_report_cloud_streams_edge_and_controller(launch, ros_node, spin_until,
                                                              tiny_models):
    period = {'diagnostics_period_s': 0.5}
    cloud = launch(CLOUD, params={'robot_namespaces': ['/g1', '/g2'], 'models_dir': tiny_models,
                                  'device': 'cpu', **period})
    edge = launch(EDGE, namespace='/g1', params={'useful_threshold': 0.0, **period})
    controller = launch(CONTROLLER, namespace='/g1', params=period)
    camera = SceneCamera(ros_node, '/g1')
    arrays = collect(ros_node, '/diagnostics', DiagnosticArray, qos.DIAGNOSTICS)

    def healthy():
        camera.publish()
        edge_status = _latest(arrays, 'cloudseg edge: /g1')
        return (_serving(_latest(arrays, 'cloudseg cloud: /g1'))
                and edge_status is not None and int(_values(edge_status)['frames_out']) > 0
                and _latest(arrays, 'cloudseg controller: /g1') is not None)

    logs = lambda: cloud.log() + edge.log() + controller.log()  # noqa: E731
    assert spin_until(healthy, 120.0), logs()
    served = _latest(arrays, 'cloudseg cloud: /g1')
    assert served.hardware_id == '/g1' and CLOUD_KEYS <= set(_values(served))
    assert _values(served)['engine'] == 'loaded'
    assert float(_values(served)['latency_p50_ms']) > 0
    idle = _latest(arrays, 'cloudseg cloud: /g2')
    assert (idle.level, idle.message) == (DiagnosticStatus.OK, 'waiting for frames')
    edge_status = _latest(arrays, 'cloudseg edge: /g1')
    assert edge_status.hardware_id == '/g1' and EDGE_KEYS <= set(_values(edge_status))
    assert _values(edge_status)['codec'] in ('jpeg', 'h264')
    assert _values(edge_status)['scale'] in ('1', '2', '3', '4')
    ctrl = _latest(arrays, 'cloudseg controller: /g1')
    assert ctrl.level != DiagnosticStatus.ERROR and CONTROLLER_KEYS <= set(_values(ctrl))
    assert _values(ctrl)['entry'], ctrl
