"""cloudseg soak's drift summary: warm-up excluded, growth flagged only beyond its bounds."""
from cloudseg_ros.tools.soak import drift_report


def _samples(cloud_mib):
    return [{'t_s': 10.0 * i, 'rss_mib': {'cloud_node': mib, 'edge_node': 100.0}}
            for i, mib in enumerate(cloud_mib)]


def test_flat_run_after_warm_up_is_no_growth():
    samples = _samples([50.0] + [400.0, 440.0, 380.0, 401.0, 402.0] * 3)  # 50: start-up
    latencies = [(t, 100.0 + t % 7) for t in range(0, 180)]
    report = drift_report(samples, latencies, duration_s=180.0, warmup_s=10.0)
    cloud = report['rss']['cloud_node']
    assert (cloud['first_mib'], cloud['start_mib'], cloud['end_mib']) == (50.0, 401.0, 401.0)
    assert cloud['max_mib'] == 440.0 and not cloud['grows']
    assert [m['minute'] for m in report['latency_per_minute']] == [0, 1, 2]
    assert report['latency_per_minute'][1]['n'] == 60
    assert report['verdict'] == 'no growth' and report['masks'] == 180


def test_rss_and_latency_growth_are_named():
    samples = _samples([400.0] * 6 + [450.0, 500.0] + [560.0] * 5)
    latencies = [(t, 100.0 + t * t / 20.0) for t in range(0, 180)]
    report = drift_report(samples, latencies, duration_s=180.0, warmup_s=10.0)
    assert report['rss']['cloud_node']['grows']
    assert report['rss']['cloud_node']['growth_mib'] == 160.0
    assert not report['rss']['edge_node']['grows']
    assert report['verdict'] == 'growth: cloud_node, latency'


def test_empty_run_reports_without_failing():
    report = drift_report([], [], duration_s=5.0, warmup_s=1.0)
    assert report['rss'] == {} and report['masks'] == 0
    assert report['latency_per_minute'] == [{'minute': 0, 'n': 0, 'p50_ms': None,
                                             'p95_ms': None}]


def test_rss_window_spans_minutes_in_long_runs_and_five_samples_in_short_ones():
    from cloudseg_ros.tools.soak import rss_window
    assert rss_window(708, [5.0 * i for i in range(708)]) == 60  # an hour at 5 s: 5 minutes
    assert rss_window(15, [10.0 * i for i in range(15)]) == 5
    # An allocator swinging between two levels is not growth, even when the run starts on the
    # low side and ends on the high one (5-sample medians read that as +85 MiB).
    swing = ([540.0] * 5 + [625.0] * 5) * 20
    report = drift_report(_samples([400.0] + swing), [], duration_s=2010.0, warmup_s=5.0)
    cloud = report['rss']['cloud_node']
    assert cloud['start_mib'] == cloud['end_mib'] == 582.5 and not cloud['grows']
