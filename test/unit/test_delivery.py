"""Sent-vs-arrived tracking: the congestion signal of a link that delivers nothing."""
import pytest

from cloudseg_ros.core.bandwidth import BandwidthEstimator
from cloudseg_ros.core.delivery import DeliveryTracker


def _send(tracker, seqs, t0, dt=0.1, size=1000):
    for i, seq in enumerate(seqs):
        tracker.on_sent(seq, t0 + i * dt, size)


def test_all_delivered_is_not_congestion():
    tracker = DeliveryTracker(timeout_s=0.5, window_s=1.0)
    _send(tracker, range(20), 0.0)
    for seq in range(20):
        tracker.on_arrived(seq)
    assert tracker.congested_rate_kbps(2.0) is None


def test_nothing_delivered_reports_zero_rate_and_young_frames_are_not_judged():
    tracker = DeliveryTracker(timeout_s=0.5, window_s=1.0)
    _send(tracker, range(20), 0.0)  # sent at 0.0 .. 1.9 s
    tracker.on_arrived(0)  # reports flow, then nothing more arrives
    assert tracker.congested_rate_kbps(0.4) is None  # everything still in flight
    assert tracker.congested_rate_kbps(2.0) == 0.0


def test_start_up_is_not_a_loss():
    """Issue 12: frames sent before the cloud's reports flow cut the estimate to 50 kbit/s."""
    tracker = DeliveryTracker(timeout_s=0.5, window_s=1.0)
    _send(tracker, range(20), 0.0)  # nothing reported yet: discovery, cloud starting
    assert tracker.congested_rate_kbps(2.0) is None
    tracker.on_arrived(12)  # the first report: frames before it are not judged
    for seq in range(13, 20):
        tracker.on_arrived(seq)
    assert tracker.congested_rate_kbps(2.0) is None
    assert tracker.congested_rate_kbps(3.0) is None


def test_reset_forgets_a_restarted_senders_frames():
    tracker = DeliveryTracker(timeout_s=0.5, window_s=1.0)
    _send(tracker, range(1, 11), 0.0)
    for seq in range(1, 11):
        tracker.on_arrived(seq)
    tracker.reset()  # the edge restarted: seq 1.. again, none of them reported yet
    _send(tracker, range(1, 11), 5.0)
    assert tracker.congested_rate_kbps(6.5) is None  # start-up again, not a loss
    tracker.on_arrived(1)
    assert tracker.congested_rate_kbps(6.5) == pytest.approx(1000 * 8e-3)


def test_partly_delivered_reports_delivered_kbps():
    tracker = DeliveryTracker(timeout_s=0.5, window_s=1.0)
    _send(tracker, range(10), 0.0)  # 0.0 .. 0.9 s, 1000 B each
    for seq in (0, 1, 2):  # 3 of 10 arrive: 7 late >= half
        tracker.on_arrived(seq)
    assert tracker.congested_rate_kbps(1.5) == pytest.approx(3 * 1000 * 8e-3 / 1.0)
    for seq in (3, 4):  # 5 of 10: late 5 >= 5 still congested; 6 of 10 is not
        tracker.on_arrived(seq)
    assert tracker.congested_rate_kbps(1.5) is not None
    tracker.on_arrived(5)
    assert tracker.congested_rate_kbps(1.5) is None


def test_arrival_report_before_send_report_counts():
    tracker = DeliveryTracker()
    tracker.on_arrived(7)
    tracker.on_sent(7, 0.0, 500)
    assert tracker.congested_rate_kbps(1.0) is None


def test_estimator_cuts_to_delivered_rate_once_per_window():
    est = BandwidthEstimator()
    before = est.estimate_kbps(0.0)
    est.on_undelivered(10.0, 400.0)
    cut = est.estimate_kbps(10.0)
    assert cut == pytest.approx(400.0) and cut < before  # what arrived, not below
    est.on_undelivered(10.2, 100.0)  # within window_s: no second cut
    assert est.estimate_kbps(10.2) == pytest.approx(cut)
    est.on_undelivered(11.5, 0.0)  # nothing delivered: floor at min_kbps
    assert est.estimate_kbps(11.5) == pytest.approx(est.config.min_kbps)


def test_invalid_tracker_config():
    with pytest.raises(ValueError):
        DeliveryTracker(timeout_s=0.0)
