"""Per-robot rate limits and the batch memory budget (core, no ROS)."""
import numpy as np
import pytest

from cloudseg_ros.core.codecs import FrameEncoder
from cloudseg_ros.core.frame_slots import LatestSlots
from cloudseg_ros.core.rate_limit import TokenBucket
from cloudseg_ros.core.receiver import FrameMeta, ReceiveError, ReceiveLimits, StreamReceiver


def test_bucket_passes_steady_rate_and_cuts_a_flood():
    bucket = TokenBucket(rate_hz=10.0, burst=10.0)
    assert all(bucket.allow(i / 10.0) for i in range(100))  # exactly the rate: all pass
    flood = [bucket.allow(10.0 + i * 1e-4) for i in range(1000)]  # 1000 in 0.1 s
    assert 10 <= sum(flood) <= 12 and bucket.refused == 1000 - sum(flood)


def test_bucket_ignores_clock_steps_back_and_rejects_bad_rates():
    bucket = TokenBucket(rate_hz=1.0)
    assert bucket.allow(100.0) and not bucket.allow(50.0) and bucket.allow(101.0)
    for bad in (0.0, -1.0, float('nan'), float('inf')):
        with pytest.raises(ValueError):
            TokenBucket(bad)


def _meta(seq, codec, keyframe=False):
    return FrameMeta(seq=seq, kind=1, codec=codec, width=64, height=48, orig_width=256,
                     orig_height=192, scale=4, keyframe=keyframe, stamp_s=0.0, session_id=7)


def test_receiver_drops_frames_over_max_frame_rate_and_h264_waits_for_idr():
    rgb = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    encoder = FrameEncoder('h264')
    receiver = StreamReceiver(ReceiveLimits(max_frame_rate_hz=2.0))
    payloads = [encoder.encode(rgb, force_keyframe=i == 0) for i in range(4)]
    receiver.receive(_meta(1, 'h264', True), payloads[0].data, arrival_s=0.0)
    receiver.receive(_meta(2, 'h264'), payloads[1].data, arrival_s=0.01)
    with pytest.raises(ReceiveError) as err:  # the third in 20 ms: over 2 Hz
        receiver.receive(_meta(3, 'h264'), payloads[2].data, arrival_s=0.02)
    assert 'max_frame_rate_hz' in str(err.value) and err.value.want_keyframe
    assert receiver.rate_limited == 1 and receiver.rejected == 1
    # The dropped frame broke the reference chain: a later P frame is not decoded as if whole.
    with pytest.raises(ReceiveError) as err:
        receiver.receive(_meta(4, 'h264'), payloads[3].data, arrival_s=5.0)
    assert 'waiting for a key frame' in str(err.value)


def test_unlimited_by_default_and_30fps_never_limited_at_120hz():
    assert StreamReceiver().rate_limited == 0
    rgb = np.zeros((48, 64, 3), np.uint8)
    data = FrameEncoder('jpeg').encode(rgb).data
    receiver = StreamReceiver(ReceiveLimits(max_frame_rate_hz=120.0))
    for i in range(300):  # 10 s of a 30 fps camera with jittered arrivals
        receiver.receive(_meta(i + 1, 'jpeg'), data, arrival_s=i / 30.0 + (i % 3) * 0.01)
    assert receiver.rate_limited == 0 and receiver.rejected == 0
    with pytest.raises(ValueError):
        ReceiveLimits(max_frame_rate_hz=0.5).validate()


def test_take_stops_at_the_pixel_budget_but_always_serves_one():
    slots = LatestSlots()
    for name, pixels in (('a', 600), ('b', 300), ('c', 200), ('d', 50)):
        slots.put(name, pixels)
    assert slots.take(8, cost=lambda p: p, budget=1000) == [('a', 600), ('b', 300)]
    slots.put('e', 5000)
    assert slots.take(8, cost=lambda p: p, budget=1000) == [('c', 200), ('d', 50)]
    assert slots.take(8, cost=lambda p: p, budget=1000) == [('e', 5000)]  # alone, over budget
    assert len(slots) == 0
