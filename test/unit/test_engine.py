"""SegEngine on the CPU with tiny random-init networks saved as real checkpoints."""
import numpy as np
import pytest
import torch

from cloudseg_ros.inference.engine import EngineConfig, EngineError, EngineInput, SegEngine
from cloudseg_ros.nets.checkpoint import build_model, CheckpointError, save_checkpoint

NUM_CLASSES = 5


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    """Tiny ICNet + CARN-M x2/x4 checkpoints: (seg path, {scale: sr path})."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp('models')
    seg = save_checkpoint(root / 'seg.pt', build_model(
        'icnet', {'num_classes': NUM_CLASSES, 'width': 4, 'low_blocks': 1}), 'icnet')
    srs = {}
    for scale in (2, 4):
        model = build_model('carn', {'scale': scale, 'channels': 8, 'num_cascades': 1,
                                     'blocks_per_cascade': 2, 'mobile': True, 'groups': 2})
        torch.nn.init.normal_(model.exit.weight, std=0.05)  # SR output differs from bilinear
        srs[scale] = str(save_checkpoint(root / f'sr_x{scale}.pt', model, 'carn'))
    return str(seg), srs


def make_engine(checkpoints, **overrides) -> SegEngine:
    seg, srs = checkpoints
    config = EngineConfig(seg_checkpoint=seg, sr_checkpoints=srs, device='cpu', warmup=False)
    for name, value in overrides.items():
        setattr(config, name, value)
    return SegEngine(config)


def frame(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def check_mask(mask: np.ndarray, width: int, height: int) -> None:
    assert mask.dtype == np.uint8 and mask.shape == (height, width)
    assert mask.max() < NUM_CLASSES


def test_mixed_batch_returns_masks_at_orig_size_in_order(checkpoints):
    engine = make_engine(checkpoints, warmup=True, warmup_size=(64, 48))
    assert engine.supported_scales() == [1, 2, 4]
    batch = [EngineInput(frame(24, 32, 1), 4, (128, 96)),
             EngineInput(frame(48, 64, 2), 2, (129, 97)),  # not divisible: resized to orig
             EngineInput(frame(24, 32, 3), 4, (128, 96)),  # batched with the first
             EngineInput(frame(40, 50, 4), 1, (50, 40))]
    outputs = engine.process(batch)
    assert len(outputs) == len(batch)
    for item, out in zip(batch, outputs):
        check_mask(out.mask, *item.orig_size)
        assert set(out.timings_ms) == {'sr', 'seg', 'total'}
        assert out.timings_ms['total'] >= out.timings_ms['seg'] >= 0
    # order is kept: the same frame alone gives the same mask as inside the mixed batch
    alone = engine.process([batch[2]])[0].mask
    assert np.array_equal(alone, outputs[2].mask)


def test_missing_sr_model_for_scale_raises_engine_error(checkpoints):
    engine = make_engine(checkpoints, sr_checkpoints={2: checkpoints[1][2]})
    with pytest.raises(EngineError, match='no SR model for x4'):
        engine.process([EngineInput(frame(24, 32), 4, (128, 96))])
    with pytest.raises(EngineError, match='scale'):
        engine.process([EngineInput(frame(24, 32), 5, (160, 120))])
    with pytest.raises(EngineError, match='uint8'):
        engine.process([EngineInput(frame(24, 32).astype(np.float32), 2, (64, 48))])


def test_bilinear_mode_needs_no_sr_checkpoints(checkpoints):
    engine = make_engine(checkpoints, sr_checkpoints={}, sr_mode='bilinear')
    assert engine.supported_scales() == [1, 2, 3, 4]
    out = engine.process([EngineInput(frame(30, 40), 3, (120, 90))])[0]
    check_mask(out.mask, 120, 90)
    assert engine.super_resolve(frame(30, 40), 3).shape == (90, 120, 3)


def test_super_resolve_uses_the_model(checkpoints):
    lr = frame(24, 32)
    sr = make_engine(checkpoints).super_resolve(lr, 2)
    bilinear = make_engine(checkpoints, sr_mode='bilinear').super_resolve(lr, 2)
    assert sr.shape == bilinear.shape == (48, 64, 3) and sr.dtype == np.uint8
    assert not np.array_equal(sr, bilinear)


def test_pyramid_reuse_feeds_the_received_frame_to_the_low_resolution_branch(checkpoints):
    """With reuse the mask depends on the LR frame itself; without, only on its SR output."""
    item = EngineInput(frame(24, 32), 4, (128, 96))
    engine = make_engine(checkpoints, pyramid_reuse=True)
    with_reuse = engine.process([item])[0].mask
    engine.config.pyramid_reuse = False  # what the cloud node's live parameter does
    without = engine.process([item])[0].mask
    check_mask(with_reuse, 128, 96)
    check_mask(without, 128, 96)
    assert not np.array_equal(with_reuse, without)
    assert np.array_equal(make_engine(checkpoints, pyramid_reuse=False).process([item])[0].mask,
                          without)


def test_pyramid_reuse_changed_live_with_cuda_graphs_captures_again(checkpoints, monkeypatch):
    """cuda_graphs on (simulated on the CPU): a graph replays the pyramid choice it was captured
    with, so a live pyramid_reuse change must reach a graph of its own, not the cached one."""
    engine = make_engine(checkpoints, pyramid_reuse=True)
    captured = []

    def capture(lr, scale, size, reuse):
        captured.append(reuse)  # None: this key runs eagerly, as after a failed capture

    monkeypatch.setattr(engine, '_use_graphs', lambda: True)
    monkeypatch.setattr(engine, '_capture', capture)
    item = EngineInput(frame(24, 32), 4, (128, 96))
    with_reuse = engine.process([item])[0].mask
    engine.config.pyramid_reuse = False
    without = engine.process([item])[0].mask
    engine.process([item])
    engine.config.pyramid_reuse = True
    engine.process([item])
    assert captured == [True, False]  # one graph per choice, each reused afterwards
    assert not np.array_equal(with_reuse, without)  # the change took effect


def test_full_graph_cache_makes_room_for_the_new_pyramid_choice(checkpoints, monkeypatch):
    engine = make_engine(checkpoints, pyramid_reuse=True)
    monkeypatch.setattr(engine, '_use_graphs', lambda: True)
    monkeypatch.setattr(engine, '_capture', lambda *args: 'graphs')
    monkeypatch.setattr('cloudseg_ros.inference.engine.MAX_CUDA_GRAPHS', 2)
    lr = torch.zeros(1, 3, 24, 32)
    for scale in (2, 4):
        assert engine._graphs_for(lr, scale, (96, 128), True) == 'graphs'
    assert engine._graphs_for(lr, 2, (48, 64), True) is None  # full: eager
    assert engine._graphs_for(lr, 4, (96, 128), False) == 'graphs'  # old choice evicted
    assert list(engine._graphs) == [((1, 3, 24, 32), 4, (96, 128), False)]


def test_segment_hr_matches_scale_one(checkpoints):
    engine = make_engine(checkpoints)
    rgb = frame(60, 80)
    mask = engine.segment_hr(rgb)
    check_mask(mask, 80, 60)
    assert np.array_equal(mask, engine.process([EngineInput(rgb, 1, (80, 60))])[0].mask)


def test_bad_configuration_is_reported(checkpoints, tmp_path):
    with pytest.raises(CheckpointError, match='missing.pt'):
        make_engine(checkpoints, seg_checkpoint=str(tmp_path / 'missing.pt'))
    with pytest.raises(CheckpointError, match="expected 'icnet'"):  # SegModelError
        make_engine(checkpoints, seg_checkpoint=checkpoints[1][2])
    with pytest.raises(EngineError, match='x2 SR model'):
        make_engine(checkpoints, sr_checkpoints={4: checkpoints[1][2]})
    with pytest.raises(EngineError, match='sr_mode'):
        make_engine(checkpoints, sr_mode='bicubic')
    with pytest.raises(EngineError, match='fp16 needs CUDA'):
        make_engine(checkpoints, precision='fp16')


def test_process_isolated_fails_only_the_bad_frame(checkpoints):
    """One robot's frame at a scale without a model must not reject the others' frames."""
    engine = make_engine(checkpoints)
    good = [EngineInput(frame(24, 32, seed), 4, (128, 96)) for seed in (1, 2)]
    bad = EngineInput(frame(32, 42, 3), 3, (128, 96))  # no x3 model here
    results = engine.process_isolated([good[0], bad, good[1]])
    assert isinstance(results[1], EngineError) and 'x3' in str(results[1])
    alone = engine.process(good)
    for result, expected in zip((results[0], results[2]), alone):
        assert np.array_equal(result.mask, expected.mask)


def test_process_isolated_finds_a_frame_that_fails_inside_the_batch(checkpoints, monkeypatch):
    """A frame that passes the input checks but fails in the network fails alone."""
    engine = make_engine(checkpoints)
    real = engine.process

    def fails_with_poison(batch):
        if any(item.lr_rgb[0, 0, 0] == 7 for item in batch):
            raise EngineError('poisoned')
        return real(batch)

    monkeypatch.setattr(engine, 'process', fails_with_poison)
    poison = frame(24, 32, 4)
    poison[0, 0, 0] = 7
    clean = frame(24, 32, 5)
    clean[0, 0, 0] = 0
    results = engine.process_isolated([EngineInput(poison, 4, (128, 96)),
                                       EngineInput(clean, 4, (128, 96))])
    assert isinstance(results[0], EngineError)
    check_mask(results[1].mask, 128, 96)


def test_padded_batches_give_the_same_masks(checkpoints):
    """A batch of 3 runs as 4 (the last frame repeated) and returns 3 identical masks."""
    padded = make_engine(checkpoints, pad_batches=True)
    plain = make_engine(checkpoints, pad_batches=False)
    batch = [EngineInput(frame(24, 32, seed), 4, (128, 96)) for seed in (1, 2, 3)]
    got, expected = padded.process(batch), plain.process(batch)
    assert len(got) == 3
    for a, b in zip(got, expected):
        assert np.array_equal(a.mask, b.mask)


def test_engine_overlays_match_the_cpu_blend_and_only_where_asked(checkpoints):
    from cloudseg_ros.core.imageops import upsample_bilinear
    from cloudseg_ros.core.palette import overlay
    engine = make_engine(checkpoints, overlay='always')
    lr = frame(24, 32, seed=3)
    with_overlay, without = engine.process([EngineInput(lr, 4, (128, 96), overlay_alpha=0.6),
                                            EngineInput(lr, 4, (128, 96))])
    assert without.overlay is None
    got = with_overlay.overlay
    assert got.dtype == np.uint8 and got.shape == (96, 128, 3)
    want = overlay(upsample_bilinear(lr, (128, 96)), with_overlay.mask, engine.colors, 0.6,
                   engine.ignore_index)
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.9
    # 'auto' blends on CUDA only: on the CPU the node's output threads do it.
    auto = make_engine(checkpoints)
    assert not auto.overlays_on_device
    assert auto.process([EngineInput(lr, 4, (128, 96), overlay_alpha=0.6)])[0].overlay is None
    with pytest.raises(EngineError, match='overlay_alpha'):
        engine.process([EngineInput(lr, 4, (128, 96), overlay_alpha=1.5)])


def test_a_per_scale_segmentation_net_serves_its_scale_only(checkpoints, tmp_path):
    torch.manual_seed(7)  # other weights, same classes
    other = str(save_checkpoint(tmp_path / 'seg_x2.pt', build_model(
        'icnet', {'num_classes': NUM_CLASSES, 'width': 4, 'low_blocks': 1}), 'icnet'))
    plain = make_engine(checkpoints)
    routed = make_engine(checkpoints, seg_scale_checkpoints={2: other})
    x2 = EngineInput(frame(24, 32, 1), 2, (64, 48))
    x4 = EngineInput(frame(12, 16, 2), 4, (64, 48))
    full = EngineInput(frame(48, 64, 3), 1, (64, 48))
    a, b = plain.process([x2, x4, full]), routed.process([x2, x4, full])
    assert not np.array_equal(a[0].mask, b[0].mask)  # x2 goes through the other net
    assert np.array_equal(a[1].mask, b[1].mask) and np.array_equal(a[2].mask, b[2].mask)


def test_a_per_scale_segmentation_net_must_match_the_classes(checkpoints, tmp_path):
    other = str(save_checkpoint(tmp_path / 'seg_x2.pt', build_model(
        'icnet', {'num_classes': NUM_CLASSES + 1, 'width': 4, 'low_blocks': 1}), 'icnet'))
    with pytest.raises(EngineError, match='cannot mix'):
        make_engine(checkpoints, seg_scale_checkpoints={2: other})
    with pytest.raises(EngineError, match='scale in 2..4'):
        make_engine(checkpoints, seg_scale_checkpoints={1: checkpoints[0]})
