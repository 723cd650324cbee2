"""Codec-aware training data (training/codec_data) and the augmentation that consumes it."""
import numpy as np
import pytest
import torch

from cloudseg_ros.core.imageops import downsample
from cloudseg_ros.training import codec_data
from cloudseg_ros.training.augment import (blur_and_noise, dihedral_pair, paired_patches,
                                           seg_augment_views)
from cloudseg_ros.training.codec_data import (CodecRange, build_degraded_views,
                                              build_lr_variants, codec_round_trip)
from cloudseg_ros.training.config import ConfigError, load_config
from cloudseg_ros.training.finetune_sr import FinetuneConfig
from cloudseg_ros.training.datasets import SegSplit, split_by_sequence


def _frames(count=6, h=48, w=72, seed=0):
    """Smooth moving patterns with some texture: codecs must lose something on them."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for t in range(count):
        base = 120 + 80 * np.sin((xx + 2 * t) / 5.0) * np.cos(yy / 7.0)
        img = np.stack([base, base[::-1], np.roll(base, 5, axis=1)], axis=-1)
        img = img + rng.normal(0, 12, img.shape)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(out)


def test_lr_variants_shapes_and_differ_from_clean():
    hr = _frames()
    lr = build_lr_variants(hr, 3, 2, CodecRange(), seed=1, workers=2)
    assert lr.shape == (6, 2, 16, 24, 3) and lr.dtype == np.uint8
    clean = np.stack([downsample(f, 3) for f in hr])
    for v in range(2):
        assert np.abs(lr[:, v].astype(int) - clean).mean() > 1.0  # codec artefacts present
        assert np.abs(lr[:, v].astype(int) - clean).mean() < 40.0  # but the same picture


def test_lr_variants_refuse_sizes_not_divisible_by_the_scale():
    with pytest.raises(ValueError, match='not divisible'):
        build_lr_variants(_frames(h=50), 4, 1, CodecRange())


def test_quality_ranges_are_honoured():
    frames = list(_frames(count=12))
    rng = np.random.default_rng(3)
    _, settings = codec_round_trip(frames, CodecRange(jpeg_quality=(40, 45), h264_crf=(30, 31),
                                                      gop=3), rng, workers=2)
    assert len(settings) == 12
    assert {c for c, _ in settings} <= {'jpeg', 'h264'}
    for codec, value in settings:
        assert (40 <= value <= 45) if codec == 'jpeg' else (30 <= value <= 31)
    _, only_jpeg = codec_round_trip(frames, CodecRange(codecs=('jpeg',)), rng)
    assert {c for c, _ in only_jpeg} == {'jpeg'}


def test_lower_quality_loses_more():
    frames = list(_frames(count=4))
    rng = np.random.default_rng(0)

    def error(codec_range):
        decoded, _ = codec_round_trip(frames, codec_range, rng, workers=1)
        return np.mean([np.abs(d.astype(int) - f).mean() for d, f in zip(decoded, frames)])

    assert error(CodecRange(('jpeg',), (20, 20))) > error(CodecRange(('jpeg',), (95, 95)))
    assert error(CodecRange(('h264',), h264_crf=(40, 40))) > \
        error(CodecRange(('h264',), h264_crf=(15, 15)))


@pytest.mark.parametrize('kwargs', [dict(codecs=()), dict(codecs=('png',)),
                                    dict(jpeg_quality=(50, 10)), dict(h264_crf=(0, 60)),
                                    dict(gop=0), dict(h264_preset='placebo2')])
def test_codec_range_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        CodecRange(**kwargs)


def test_degraded_views_keep_size_and_differ():
    hr = _frames(count=4)
    views = build_degraded_views(hr, 3, CodecRange(), seed=2, workers=2)
    assert views.shape == (4, 3) + hr.shape[1:] and views.dtype == np.uint8
    diff = np.abs(views.astype(int) - hr[:, None]).mean(axis=(2, 3, 4))
    assert (diff > 0.5).all() and (diff < 60).all()


def test_cached_builds_once(tmp_path):
    calls = []

    def build():
        calls.append(1)
        return np.arange(6, dtype=np.uint8).reshape(2, 3)

    path = str(tmp_path / 'c' / 'x.npy')
    first = codec_data.cached(path, build, 'test')
    second = codec_data.cached(path, build, 'test')
    assert len(calls) == 1 and np.array_equal(first, second)


def test_paired_patches_are_aligned():
    hr = torch.from_numpy(_frames(count=3, h=48, w=72))
    # LR "variants" made by exact area averaging: an aligned HR patch must average to it.
    lr = torch.stack([torch.nn.functional.avg_pool2d(hr.permute(0, 3, 1, 2).float(), 4)
                      .permute(0, 2, 3, 1)] * 2, dim=1)
    lr_p, hr_p = paired_patches(hr, lr, 5, (6, 8), 4)
    assert lr_p.shape == (5, 6, 8, 3) and hr_p.shape == (5, 24, 32, 3)
    pooled = torch.nn.functional.avg_pool2d(hr_p.permute(0, 3, 1, 2).float(), 4)
    assert torch.allclose(pooled.permute(0, 2, 3, 1), lr_p, atol=1e-4)


def test_dihedral_pair_flips_both_alike():
    lr = torch.rand(8, 3, 4, 4)
    hr = lr.repeat_interleave(2, 2).repeat_interleave(2, 3)
    lr2, hr2 = dihedral_pair(lr, hr)
    assert torch.equal(hr2, lr2.repeat_interleave(2, 2).repeat_interleave(2, 3))


def test_seg_views_share_geometry_and_colour():
    imgs = torch.from_numpy(_frames(count=2))
    labels = torch.randint(0, 11, (2, 48, 72), dtype=torch.uint8)
    clean, degraded, lab = seg_augment_views(imgs, imgs.clone(), labels, (32, 40))
    assert clean.shape == (2, 3, 32, 40) and lab.shape == (2, 32, 40)
    assert torch.allclose(clean, degraded)  # identical inputs -> identical views
    noisy = blur_and_noise(degraded, 1.0, 1.5, 1.0, 0.05)
    assert noisy.shape == degraded.shape and not torch.allclose(noisy, degraded)
    assert noisy.min() >= 0 and noisy.max() <= 1


def test_split_by_sequence(tmp_path):
    (tmp_path / 'frames.csv').write_text(
        'split,stem,sequence,frame_30hz,time_s\ntrain,a_1,A,1,0\ntrain,b_1,B,1,0\n'
        'train,a_2,A,2,0\n')
    split = SegSplit(np.zeros((3, 2, 2, 3), np.uint8), np.zeros((3, 2, 2), np.uint8), ['x'],
                     11, ['a_1', 'b_1', 'a_2'])
    rest, held = split_by_sequence(split, str(tmp_path), ['B'])
    assert rest.stems == ['a_1', 'a_2'] and held.stems == ['b_1']
    with pytest.raises(ValueError, match='not in'):
        split_by_sequence(split, str(tmp_path), ['C'])


def test_h264_round_trips_use_the_robots_preset_by_default():
    """Training must see what the robot sends: its x264 preset, unless a config says otherwise."""
    frames = _frames(count=6, h=64, w=96)
    rng = np.random.default_rng

    def decoded(**preset):
        codec_range = CodecRange(('h264',), h264_crf=(30, 30), **preset)
        return np.stack(codec_round_trip(frames, codec_range, rng(0))[0])

    assert CodecRange().h264_preset == codec_data.EDGE_DEFAULT_X264_PRESET == 'veryfast'
    assert np.array_equal(decoded(), decoded(h264_preset='veryfast'))
    assert not np.array_equal(decoded(), decoded(h264_preset='ultrafast'))


def test_a_bad_preset_in_a_training_config_is_a_config_error():
    cfg = load_config(FinetuneConfig, None, ['h264_preset=placebo2'])
    with pytest.raises(ConfigError, match='placebo2'):
        codec_data.codec_range_of(cfg)
