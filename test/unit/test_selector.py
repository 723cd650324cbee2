"""Unit tests for cloudseg_ros.core.selector (the two-level frame selector).

Real CamVid frames are used when the data directory exists; otherwise a synthetic street-like
texture stands in, so the rules are always exercised.
"""
from pathlib import Path
from typing import List

import cv2
import numpy as np
import pytest

from cloudseg_ros.core.selector import (Decision, FrameKind, FrameSelector, SelectorConfig,
                                        content_score)

DATA = Path(__file__).resolve().parents[2].parent / 'shared' / 'data' / 'camvid11'
FPS = 15.0


def _read(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _texture(seed: int, height: int = 360, width: int = 480) -> np.ndarray:
    """Smooth random colour texture (stands in for a scene when CamVid is missing)."""
    coarse = np.random.default_rng(seed).integers(0, 256, (height // 12, width // 12, 3), np.uint8)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)


@pytest.fixture(scope='module')
def clip() -> List[np.ndarray]:
    """20 consecutive 15 fps frames (CamVid val) or a panning texture."""
    paths = sorted((DATA / 'val' / 'images').glob('*.jpg'))[:20]
    if paths:
        return [_read(p) for p in paths]
    wide = _texture(0, 360, 480 + 20 * 2)
    return [np.ascontiguousarray(wide[:, 2 * i:2 * i + 480]) for i in range(20)]


@pytest.fixture(scope='module')
def other_scene() -> np.ndarray:
    """A frame from another sequence (a hard cut), or an unrelated texture."""
    paths = sorted((DATA / 'train' / 'images').glob('0001TP_*.jpg'))
    return _read(paths[0]) if paths else _texture(99)


def _noisy(img: np.ndarray, rng: np.random.Generator, sigma: float = 3.0) -> np.ndarray:
    return np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)


def _sent_times(decisions: List[Decision], times: List[float]) -> List[float]:
    return [t for d, t in zip(decisions, times) if d.kind != FrameKind.SKIP]


def test_static_scene_sends_key_then_forced_every_interval(clip):
    selector = FrameSelector(SelectorConfig(max_interval_s=2.0))
    rng = np.random.default_rng(0)
    noisy = [_noisy(clip[0], rng) for _ in range(6)]  # sensor noise only, cycled (fast test)
    times = [i / FPS for i in range(int(10 * FPS))]
    decisions = [selector.decide(noisy[i % len(noisy)], t) for i, t in enumerate(times)]
    kinds = [d.kind for d in decisions if d.kind != FrameKind.SKIP]
    assert kinds == [FrameKind.KEY] + [FrameKind.FORCED] * 4  # t = 0, 2, 4, 6, 8 s
    gaps = np.diff(_sent_times(decisions, times))
    assert np.all(gaps >= 2.0) and np.all(gaps <= 2.0 + 1.0 / FPS + 1e-9)
    assert selector.counts[FrameKind.SKIP] == len(times) - 5
    assert sum(selector.counts.values()) == len(times)
    assert all(d.score_vs_sent < 0.03 for d in decisions[1:])


def test_first_frame_is_key_with_max_scores(clip):
    decision = FrameSelector().decide(clip[0], 0.0)
    assert decision.kind == FrameKind.KEY and decision.send
    assert decision.score_vs_sent == 1.0 and decision.score_vs_key == 1.0


def test_hard_cut_is_key_at_once(clip, other_scene):
    selector = FrameSelector()
    for i in range(5):
        selector.decide(clip[0], i / FPS)
    decision = selector.decide(other_scene, 5 / FPS)
    assert decision.kind == FrameKind.KEY
    assert decision.score_vs_key >= SelectorConfig().key_threshold


def test_small_motion_is_useful(clip):
    selector = FrameSelector()
    assert selector.decide(clip[0], 0.0).kind == FrameKind.KEY
    decision = selector.decide(clip[1], 1 / FPS)  # one 15 fps frame of driving
    assert decision.kind == FrameKind.USEFUL
    assert 0.03 <= decision.score_vs_sent < 0.2


def test_shifted_view_is_useful_not_key(clip):
    big = clip[0]
    selector = FrameSelector()
    selector.decide(np.ascontiguousarray(big[:, :440]), 0.0)
    decision = selector.decide(np.ascontiguousarray(big[:, 4:444]), 1 / FPS)  # 4 px pan
    assert decision.kind == FrameKind.USEFUL


def test_drift_accumulates_into_a_new_key(clip):
    selector = FrameSelector()
    kinds = [selector.decide(frame, i / FPS).kind for i, frame in enumerate(clip)]
    assert kinds[0] == FrameKind.KEY
    assert FrameKind.SKIP not in kinds  # every driving frame changes enough
    # each frame drifts further from the key until a new KEY is declared
    selector.reset()
    scores = [selector.decide(frame, i / FPS).score_vs_key for i, frame in enumerate(clip[:4])]
    assert scores[1] < scores[2] < scores[3]


def test_rate_limit_is_respected(clip):
    rate_hz = 5.0
    selector = FrameSelector(SelectorConfig(max_rate_hz=rate_hz))
    times = [i / 30.0 for i in range(60)]  # a 30 fps camera of always-changing content
    decisions = [selector.decide(clip[i % len(clip)], t) for i, t in enumerate(times)]
    sent = _sent_times(decisions, times)
    assert np.all(np.diff(sent) >= 0.9 / rate_hz - 1e-9)  # at most the jitter tolerance early
    assert len(sent) <= (times[-1] - times[0]) * rate_hz + 1
    assert len(sent) >= (times[-1] - times[0]) * rate_hz - 1  # and not needlessly fewer


def test_rate_limit_tolerates_camera_jitter(clip):
    selector = FrameSelector(SelectorConfig(max_rate_hz=FPS))
    rng = np.random.default_rng(3)
    times = np.arange(20) / FPS + rng.uniform(-0.004, 0.004, 20)  # +-4 ms timestamp jitter
    kinds = [selector.decide(frame, t).kind for frame, t in zip(clip, times)]
    assert FrameKind.SKIP not in kinds


def test_rate_limit_early_frames_do_not_raise_average_rate(clip):
    selector = FrameSelector(SelectorConfig(max_rate_hz=FPS))
    period = 0.95 / FPS  # every frame 5 % early: within the jitter tolerance one by one
    times = [i * period for i in range(150)]
    decisions = [selector.decide(clip[i % len(clip)], t) for i, t in enumerate(times)]
    sent = _sent_times(decisions, times)
    assert len(sent) <= (times[-1] - times[0]) * FPS + 2  # tolerance must not accumulate


def test_cut_during_rate_limit_waits_then_key(clip, other_scene):
    selector = FrameSelector(SelectorConfig(max_rate_hz=2.0))
    assert selector.decide(clip[0], 0.0).kind == FrameKind.KEY
    cut = selector.decide(other_scene, 0.1)
    assert cut.kind == FrameKind.SKIP  # too soon: the cut waits
    assert selector.decide(other_scene, 0.3).kind == FrameKind.SKIP
    assert selector.decide(other_scene, 0.5).kind == FrameKind.KEY  # remembered


def test_request_key_makes_next_static_frame_key(clip):
    selector = FrameSelector()
    selector.decide(clip[0], 0.0)
    assert selector.decide(clip[0], 0.1).kind == FrameKind.SKIP
    selector.request_key()
    assert selector.decide(clip[0], 0.2).kind == FrameKind.KEY
    assert selector.decide(clip[0], 0.3).kind == FrameKind.SKIP  # one-shot


def test_resolution_change_resets_references(clip):
    selector = FrameSelector()
    selector.decide(clip[0], 0.0)
    small = cv2.resize(clip[0], (240, 180), interpolation=cv2.INTER_AREA)
    decision = selector.decide(small, 0.2)
    assert decision.kind == FrameKind.KEY and decision.score_vs_key == 1.0
    assert selector.decide(small, 0.4).kind == FrameKind.SKIP


def test_time_going_backwards_restarts(clip):
    selector = FrameSelector()
    selector.decide(clip[0], 100.0)
    selector.decide(clip[0], 100.5)
    assert selector.decide(clip[0], 0.0).kind == FrameKind.KEY  # a looping replay


def test_reset_clears_counts_and_references(clip):
    selector = FrameSelector()
    selector.decide(clip[0], 0.0)
    selector.decide(clip[0], 0.1)
    selector.reset()
    assert all(count == 0 for count in selector.counts.values())
    assert set(selector.counts) == set(FrameKind)
    assert selector.decide(clip[0], 0.2).kind == FrameKind.KEY


@pytest.mark.parametrize('changes, reason', [
    ({'useful_threshold': -0.1}, 'useful_threshold'),
    ({'key_threshold': 1.5}, 'key_threshold'),
    ({'useful_threshold': 0.3, 'key_threshold': 0.2}, 'must not exceed'),
    ({'max_interval_s': 0.0}, 'max_interval_s'),
    ({'max_rate_hz': -1.0}, 'max_rate_hz'),
    ({'thumb_width': 2}, 'thumb_width'),
])
def test_reconfigure_rejects_bad_config_and_keeps_old(clip, changes, reason):
    selector = FrameSelector()
    with pytest.raises(ValueError, match=reason):
        selector.reconfigure(SelectorConfig(**changes))
    assert selector.config == SelectorConfig()
    with pytest.raises(ValueError, match=reason):
        FrameSelector(SelectorConfig(**changes))


def test_reconfigure_applies_new_thresholds(clip):
    selector = FrameSelector()
    selector.decide(clip[0], 0.0)
    selector.reconfigure(SelectorConfig(useful_threshold=0.5, key_threshold=0.9))
    assert selector.decide(clip[1], 0.1).kind == FrameKind.SKIP  # motion no longer enough
    selector.reconfigure(SelectorConfig(thumb_width=32))
    assert selector.decide(clip[1], 0.2).kind == FrameKind.KEY  # thumbnails incomparable


def test_config_is_copied_not_shared():
    config = SelectorConfig()
    selector = FrameSelector(config)
    config.max_rate_hz = -5.0  # mutating the caller's object must not bypass validation
    assert selector.config.max_rate_hz == 15.0


def test_decide_rejects_non_rgb(clip):
    with pytest.raises(ValueError, match='uint8'):
        FrameSelector().decide(clip[0].astype(np.float32), 0.0)
    with pytest.raises(ValueError, match='3 dimensions'):
        FrameSelector().decide(clip[0][..., 0], 0.0)


def test_content_score_bounds():
    zero = np.zeros((48, 64), np.float32)
    one = np.ones((48, 64), np.float32)
    assert content_score(zero, zero, zero, zero) == 0.0
    edges = np.full((48, 64), 4.0, np.float32)
    assert content_score(zero, zero, one, edges) <= 1.0
    assert content_score(zero, zero, one, edges) > 0.9
