"""The controller's edge sync without ROS: read back, set what differs, retry, re-apply."""
from cloudseg_ros.core.param_sync import ParamSync, SyncConfig
from cloudseg_ros.core.profile import EDGE_PARAMETERS, StreamConfig

WANTED = {'scale': 4, 'max_rate_hz': 10.0}
NAMES = ('scale', 'max_rate_hz', 'codec')
EDGE_DEFAULTS = {'scale': 1, 'max_rate_hz': 15.0, 'codec': 'jpeg'}


def ready_sync(**config) -> ParamSync:
    sync = ParamSync(NAMES, SyncConfig(**config))
    assert sync.on_presence(True)
    return sync


def read(sync, now_s, values):
    request = sync.next_request(now_s, WANTED)
    assert request.kind == 'get' and request.names == NAMES
    sync.on_get_done(now_s, request, values)


def test_nothing_is_sent_until_the_services_are_there():
    sync = ParamSync(NAMES)
    assert sync.next_request(0.0, WANTED) is None
    assert sync.status(WANTED) == 'edge parameter services not reachable'


def test_reads_first_then_sets_only_what_differs_then_reads_back():
    sync = ready_sync()
    read(sync, 0.0, {'scale': 1, 'max_rate_hz': 10.0, 'codec': 'jpeg'})
    assert not sync.in_sync(WANTED) and sync.status(WANTED) == 'applying scale'
    request = sync.next_request(0.1, WANTED)
    assert request.kind == 'set' and request.values == {'scale': 4}
    assert sync.next_request(0.2, WANTED) is None  # one request at a time
    assert sync.on_set_done(0.3, request, [(True, '')]) == []
    assert not sync.in_sync(WANTED)  # accepted is not yet running: read back first
    read(sync, 0.3, {'scale': 4, 'max_rate_hz': 10.0, 'codec': 'jpeg'})
    assert sync.in_sync(WANTED) and sync.status(WANTED) == ''
    assert sync.next_request(0.4, WANTED) is None


def test_refusal_is_reported_once_running_value_kept_and_retried_with_backoff():
    sync = ready_sync(first_retry_s=1.0, max_retry_s=4.0, verify_period_s=60.0)
    read(sync, 0.0, EDGE_DEFAULTS)
    request = sync.next_request(0.0, WANTED)
    refusals = sync.on_set_done(0.1, request, [(True, ''), (False, 'below min_rate_hz 12')])
    assert [str(r) for r in refusals] == ["max_rate_hz=10.0: below min_rate_hz 12"]
    read(sync, 0.1, {'scale': 4, 'max_rate_hz': 15.0, 'codec': 'jpeg'})
    assert sync.running['max_rate_hz'] == 15.0  # what the edge really runs
    assert sync.status(WANTED) == 'edge refused max_rate_hz=10.0: below min_rate_hz 12'
    assert sync.next_request(1.0, WANTED) is None  # backoff: 1 s after the failure
    retry = sync.next_request(1.2, WANTED)
    assert retry.values == {'max_rate_hz': 10.0}
    assert sync.on_set_done(1.2, retry, [(False, 'below min_rate_hz 12')]) == []  # not new
    read(sync, 1.2, {'scale': 4, 'max_rate_hz': 15.0, 'codec': 'jpeg'})
    assert sync.next_request(3.0, WANTED) is None  # 2 s now
    assert sync.next_request(3.3, WANTED).kind == 'set'


def test_backoff_is_bounded():
    config = SyncConfig(first_retry_s=0.5, max_retry_s=8.0)
    assert [config.backoff_s(n) for n in range(7)] == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 8.0]


def test_unanswered_request_times_out_and_is_retried_later():
    sync = ready_sync(timeout_s=2.0, first_retry_s=1.0)
    lost = sync.next_request(0.0, WANTED)
    assert sync.next_request(1.9, WANTED) is None
    assert sync.next_request(2.0, WANTED) is None and sync.timeouts == 1  # backoff 1 s
    again = sync.next_request(3.0, WANTED)
    assert again.kind == 'get'
    sync.on_get_done(3.1, lost, EDGE_DEFAULTS)  # the late answer to the lost one is ignored
    assert sync.running is None
    sync.on_get_done(3.1, again, EDGE_DEFAULTS)
    assert sync.running == EDGE_DEFAULTS


def test_periodic_read_back_finds_divergence_and_reapplies():
    sync = ready_sync(verify_period_s=2.0)
    read(sync, 0.0, {'scale': 4, 'max_rate_hz': 10.0, 'codec': 'jpeg'})
    assert sync.in_sync(WANTED)
    assert sync.next_request(1.0, WANTED) is None
    read(sync, 2.0, EDGE_DEFAULTS)  # restarted with its defaults, or someone set them
    assert sync.next_request(2.1, WANTED).values == WANTED


def test_edge_disappearing_and_coming_back_is_read_again():
    sync = ready_sync()
    read(sync, 0.0, {'scale': 4, 'max_rate_hz': 10.0, 'codec': 'jpeg'})
    assert not sync.on_presence(False)
    assert sync.running is None and sync.next_request(0.5, WANTED) is None
    assert sync.on_presence(True)
    assert sync.next_request(0.6, WANTED).kind == 'get'


def test_restart_seen_in_sequence_numbers_forgets_what_ran():
    sync = ready_sync(verify_period_s=60.0)
    read(sync, 0.0, {'scale': 4, 'max_rate_hz': 10.0, 'codec': 'jpeg'})
    sync.on_restart()
    assert not sync.in_sync(WANTED)
    assert sync.next_request(0.1, WANTED).kind == 'get'


def test_stream_config_from_edge_parameters():
    config = StreamConfig(4, 'h264', 30, 10.0, 0.05, 0.3)
    values = dict(config.edge_parameters(), jpeg_quality=75)
    assert StreamConfig.from_edge_parameters(values) == config
    assert set(config.edge_parameters()) <= set(EDGE_PARAMETERS)
    assert StreamConfig.from_edge_parameters({'scale': 4}) is None
