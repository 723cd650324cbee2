"""Robot side without ROS: key-frame requests from the receiver are rate-limited."""
import numpy as np
import pytest

from cloudseg_ros.core.edge_pipeline import (KEY_REQUEST_MIN_INTERVAL_S, EdgeConfig,
                                             EdgePipeline)
from cloudseg_ros.core.selector import FrameKind


def _static_frame():
    yy, xx = np.mgrid[0:90, 0:120]
    return np.stack([xx % 256, yy % 256, (xx + yy) % 256], axis=2).astype(np.uint8)


def _key_frames(requests_per_s, seconds=15.0, fps=15.0):
    pipeline = EdgePipeline(EdgeConfig(scale=1, codec='h264', max_interval_s=60.0))
    rgb = _static_frame()
    keys, next_request_s = 0, 0.0
    for index in range(int(seconds * fps)):
        t_s = index / fps
        while requests_per_s and next_request_s <= t_s:
            pipeline.remote_key_request(next_request_s)
            next_request_s += 1.0 / requests_per_s
        frame = pipeline.process(rgb, t_s)
        keys += frame is not None and frame.keyframe
    return keys, pipeline


def test_request_flood_cannot_turn_every_frame_into_a_key_frame():
    quiet, _ = _key_frames(0)
    flooded, pipeline = _key_frames(30.0)  # 450 requests in 15 s
    assert quiet == 1  # a static scene: the first frame only
    honoured_at_most = 15.0 / KEY_REQUEST_MIN_INTERVAL_S + 1
    assert flooded <= quiet + honoured_at_most  # was 223 of 225 frames
    assert pipeline.key_requests_ignored >= 450 - honoured_at_most


def test_requests_at_the_clouds_pace_are_all_honoured():
    pipeline = EdgePipeline(EdgeConfig())
    assert all(pipeline.remote_key_request(i * KEY_REQUEST_MIN_INTERVAL_S) for i in range(10))
    assert not pipeline.remote_key_request(9 * KEY_REQUEST_MIN_INTERVAL_S + 0.1)
    rgb = _static_frame()
    pipeline.process(rgb, 0.0)
    assert pipeline.process(rgb, 0.5) is None  # static scene: skipped
    assert pipeline.remote_key_request(10.0)
    assert pipeline.process(rgb, 1.0).kind == FrameKind.KEY


def test_the_x264_preset_is_a_robot_setting_with_a_bounded_choice():
    pipeline = EdgePipeline(EdgeConfig(codec='h264', h264_preset='veryfast'))
    assert pipeline.encoder.h264_preset == 'veryfast'
    pipeline.reconfigure(EdgeConfig(codec='h264', h264_preset='superfast'))
    assert pipeline.encoder.h264_preset == 'superfast'
    for too_slow in ('slow', 'placebo', 'nonsense'):
        with pytest.raises(ValueError, match='x264 preset'):
            EdgeConfig(h264_preset=too_slow).validate()
