"""Status rules of core/health.py: levels, messages and values from plain counters."""
from cloudseg_ros.core.health import (CloudStreamHealth, EdgeCounters, EdgeHealth, ERROR, OK,
                                      StreamCounters, WARN, controller_report)


def _counts(frames_in, rejected=0, superseded=0, lost=0):
    return StreamCounters(frames_in, rejected, superseded, lost)


def test_cloud_ok_while_masks_follow_frames_with_rate_and_median_latency():
    health = CloudStreamHealth('/r1', stale_s=3.0)
    health.report(0.0, _counts(0), 'loaded')
    for latency_ms in (10.0, 30.0, 20.0, 500.0, 25.0):
        health.on_mask(latency_ms)
    report = health.report(1.0, _counts(6, superseded=1, lost=2), 'loaded')
    values = dict(report.values)
    assert (report.name, report.hardware_id, report.level) == ('cloudseg cloud: /r1', '/r1', OK)
    assert values['masks_per_s'] == '5.0' and values['frames_in_per_s'] == '6.0'
    assert values['latency_p50_ms'] == '25.0'
    assert (values['frames_superseded'], values['frames_lost']) == ('1', '2')
    assert values['engine'] == 'loaded'


def test_cloud_error_without_engine():
    report = CloudStreamHealth('/r1').report(0.0, _counts(3, rejected=3), 'no weights')
    assert report.level == ERROR and 'engine not loaded: no weights' in report.message
    assert dict(report.values)['latency_p50_ms'] == 'nan'


def test_cloud_warns_when_frames_arrive_but_no_mask_for_stale_s():
    health = CloudStreamHealth('/r1', stale_s=2.0)
    health.on_mask(10.0)
    assert health.report(0.0, _counts(1), 'loaded').level == OK
    assert health.report(1.0, _counts(5), 'loaded').level == OK  # mask 1 s ago: fine
    late = health.report(2.5, _counts(9), 'loaded')
    assert late.level == WARN and 'no mask in 2 s' in late.message


def test_cloud_idle_robot_is_ok_and_frames_stopping_clears_the_warning():
    health = CloudStreamHealth('/r1', stale_s=2.0)
    assert health.report(0.0, _counts(0), 'loaded').message == 'waiting for frames'
    health.report(1.0, _counts(4), 'loaded')
    assert health.report(2.5, _counts(8), 'loaded').level == WARN
    assert health.report(10.0, _counts(8), 'loaded').level == OK  # robot stopped sending


def test_cloud_warns_only_while_rejections_grow():
    health = CloudStreamHealth('/r1')
    health.on_mask(10.0)
    health.report(0.0, _counts(2), 'loaded')
    grown = health.report(1.0, _counts(4, rejected=1), 'loaded')
    assert grown.level == WARN and grown.message == 'frames rejected'
    health.on_mask(10.0)
    assert health.report(2.0, _counts(6, rejected=1), 'loaded').level == OK


def _edge(frames_in, frames_out, bytes_out=0, rejected=0):
    return EdgeCounters(frames_in, frames_out, bytes_out, rejected, 4, 'jpeg', 75)


def test_edge_rates_bitrate_and_encoding():
    health = EdgeHealth('/r1', stale_s=3.0)
    health.report(0.0, _edge(0, 0))
    report = health.report(2.0, _edge(30, 10, bytes_out=5000))
    values = dict(report.values)
    assert (report.name, report.hardware_id, report.level) == ('cloudseg edge: /r1', '/r1', OK)
    assert (values['frames_in_per_s'], values['frames_out_per_s']) == ('15.0', '5.0')
    assert values['uplink_kbps'] == '20.0'
    assert (values['scale'], values['codec'], values['quality']) == ('4', 'jpeg', '75')


def test_edge_warns_without_camera_after_stale_s_and_when_nothing_is_sent():
    health = EdgeHealth('/r1', stale_s=2.0)
    assert health.report(0.0, _edge(0, 0)).level == OK  # just started
    no_camera = health.report(2.0, _edge(0, 0))
    assert no_camera.level == WARN and 'no camera image' in no_camera.message
    health.report(3.0, _edge(5, 1))
    health.report(4.0, _edge(10, 1))
    stuck = health.report(6.0, _edge(20, 1))
    assert stuck.level == WARN and 'none sent' in stuck.message


def test_edge_warns_on_new_rejections():
    health = EdgeHealth('/r1')
    health.report(0.0, _edge(5, 2))
    assert health.report(1.0, _edge(10, 4, rejected=2)).level == WARN
    assert health.report(2.0, _edge(15, 6, rejected=2)).level == OK


def test_controller_levels():
    ok = controller_report('/r1', 812.5, 'x4-jpeg', 'bandwidth dropped', True, True)
    assert ok.level == OK and ok.name == 'cloudseg controller: /r1'
    assert dict(ok.values)['bandwidth_estimate_kbps'] == '812.5'
    assert dict(ok.values)['last_switch_reason'] == 'bandwidth dropped'
    assert controller_report('/r1', 800.0, 'x4', '', False, True).level == WARN
    refused = controller_report('/r1', 800.0, 'x4', '', False, True,
                                edge_status='edge refused max_rate_hz=10.0: below 12')
    assert refused.level == WARN and refused.message.endswith('edge refused max_rate_hz=10.0: '
                                                              'below 12')
    assert controller_report('/r1', 800.0, 'x4', '', False, False).level == OK  # advise only
    missing = controller_report('/r1', None, None, '', False, True, profile_error='no file')
    assert missing.level == ERROR and dict(missing.values)['bandwidth_estimate_kbps'] == 'nan'
