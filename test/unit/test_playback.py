"""Pacing recorded frames: recorded gaps / rate, loops and late players re-anchor."""
import pytest

from cloudseg_ros.core.playback import Pacer

MS = 1_000_000


def test_recorded_gaps_are_kept_and_scaled_by_rate():
    pacer = Pacer(rate=2.0)
    assert pacer.due_s(1000 * MS, now_s=10.0) == 10.0
    assert pacer.due_s(1100 * MS, now_s=10.01) == pytest.approx(10.05)
    assert pacer.due_s(1300 * MS, now_s=10.06) == pytest.approx(10.15)


def test_loop_and_lag_reanchor_instead_of_bursting():
    pacer = Pacer(rate=1.0, max_lag_s=0.25)
    pacer.due_s(5000 * MS, now_s=0.0)
    assert pacer.due_s(5100 * MS, now_s=0.05) == pytest.approx(0.1)
    assert pacer.due_s(4000 * MS, now_s=0.2) == 0.2  # looped: log time went back
    assert pacer.due_s(4100 * MS, now_s=0.21) == pytest.approx(0.3)
    assert pacer.due_s(4200 * MS, now_s=2.0) == 2.0  # 1.6 s late: no burst
    assert pacer.reanchored == 1
    with pytest.raises(ValueError):
        Pacer(rate=0.0)
