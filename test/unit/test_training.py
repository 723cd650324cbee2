"""Training code on tiny configs: configs, datasets, augmentation, losses, a few steps, resume."""
import os
import types

import cv2
import numpy as np
import pytest
import torch

from cloudseg_ros.core import imageops
from cloudseg_ros.core.sources import FrameSource
from cloudseg_ros.nets.checkpoint import build_model, load_checkpoint
from cloudseg_ros.training import common, config, datasets, losses
from cloudseg_ros.training.augment import (area_downsample, color_cast, cutmix, seg_augment,
                                           sr_batch)
from cloudseg_ros.training.finetune_sr import FinetuneConfig, Lambda, pyramid_for
from cloudseg_ros.training.train_seg import label_loss, SegTrainConfig
from cloudseg_ros.training.train_seg import main as train_seg_main
from cloudseg_ros.training.train_sr import SRTrainConfig

SHARED_CAMVID = os.path.join(os.path.dirname(__file__), '..', '..', '..', 'shared', 'data',
                             'camvid11')


def _write_camvid(root, split, n=3, h=48, w=64, seed=0):
    """A tiny camvid11-layout split: random images, blocky labels with some void."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, split, 'images'), exist_ok=True)
    os.makedirs(os.path.join(root, split, 'labels'), exist_ok=True)
    for i in range(n):
        label = np.repeat(np.repeat(rng.integers(0, 12, (h // 8, w // 8)), 8, 0), 8, 1)
        image = (label[..., None] * 20 + rng.integers(0, 30, (h, w, 3))).astype(np.uint8)
        cv2.imwrite(os.path.join(root, split, 'images', f'f{i:03d}.jpg'), image)
        cv2.imwrite(os.path.join(root, split, 'labels', f'f{i:03d}.png'), label.astype(np.uint8))
    names = ['Sky', 'Building', 'Pole', 'Road', 'Pavement', 'Tree', 'SignSymbol', 'Fence', 'Car',
             'Pedestrian', 'Bicyclist', 'Unlabelled']
    with open(os.path.join(root, 'classes.txt'), 'w') as f:
        f.writelines(f'{i} {n} 0 0 0\n' for i, n in enumerate(names))


@pytest.fixture(scope='module')
def camvid(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('camvid'))
    _write_camvid(root, 'train', 4)
    _write_camvid(root, 'val', 2, seed=1)
    return root


# --- config -------------------------------------------------------------------------------------

def test_set_overrides_convert_types():
    cfg = config.load_config(SegTrainConfig, None, [
        'steps=12', 'lr=3e-4', 'flip=false', 'aux_weights=0.1,0.2', 'data=/x'])
    assert (cfg.steps, cfg.lr, cfg.flip, cfg.aux_weights, cfg.data) == (
        12, 3e-4, False, (0.1, 0.2), '/x')


@pytest.mark.parametrize('override, message', [
    ('stepz=3', "unknown config key 'stepz'"),
    ('steps=abc', "'steps': expected int"),
    ('steps=2.5', "'steps': expected int"),
    ('flip=maybe', "'flip': expected a bool"),
    ('steps', 'key=value'),
])
def test_set_override_errors(override, message):
    with pytest.raises(config.ConfigError, match=message):
        config.load_config(SegTrainConfig, None, [override])


def test_yaml_then_set(tmp_path):
    path = tmp_path / 'c.yaml'
    path.write_text('scale: 2\npatch: 96\n')
    cfg = config.load_config(SRTrainConfig, str(path), ['patch=64'])
    assert (cfg.scale, cfg.patch) == (2, 64)
    path.write_text('scale: [1, 2]\n')
    with pytest.raises(config.ConfigError):
        config.load_config(SRTrainConfig, str(path))


def test_cli_reports_bad_override(capsys):
    assert train_seg_main(['--set', 'nope=1']) == 2
    assert "unknown config key 'nope'" in capsys.readouterr().err


# --- datasets -----------------------------------------------------------------------------------

def test_cityscapes_id_mapping():
    ids = np.array([[7, 8, 26, 33], [0, 6, 34, 255]], np.uint8)
    expected = np.array([[0, 1, 13, 18], [255, 255, 255, 255]], np.uint8)
    assert np.array_equal(datasets.cityscapes_to_train_ids(ids), expected)
    lut = datasets.cityscapes_lut()
    assert sorted(set(lut[lut != 255].tolist())) == list(range(19))


def test_cityscapes_folder(tmp_path):
    for split, city in (('train', 'aachen'), ('train', 'bonn')):
        img_dir = tmp_path / 'leftImg8bit' / split / city
        gt_dir = tmp_path / 'gtFine' / split / city
        img_dir.mkdir(parents=True)
        gt_dir.mkdir(parents=True)
        stem = f'{city}_000000_000019'
        cv2.imwrite(str(img_dir / f'{stem}_leftImg8bit.png'), np.zeros((16, 32, 3), np.uint8))
        cv2.imwrite(str(gt_dir / f'{stem}_gtFine_labelIds.png'), np.full((16, 32), 26, np.uint8))
    split = datasets.load_seg_split(str(tmp_path), 'train', 'cityscapes')
    assert len(split) == 2 and split.num_classes == 19 and split.ignore_index == 255
    assert np.all(split.labels == 13)  # car


def test_camvid_split(camvid):
    split = datasets.load_seg_split(camvid, 'train')
    assert split.images.shape == (4, 48, 64, 3) and split.labels.shape == (4, 48, 64)
    assert split.num_classes == 11 and split.class_names[0] == 'Sky'
    assert split.labels.max() <= 11


@pytest.mark.skipif(not os.path.isdir(SHARED_CAMVID), reason='shared CamVid not present')
def test_shared_camvid_class_names():
    names = datasets.read_class_names(os.path.join(SHARED_CAMVID, 'classes.txt'))
    assert names[0] == 'Sky' and names[-1] == 'Bicyclist' and len(names) == 11


def test_frames_from_folder_and_video(tmp_path):
    frames = [np.full((16, 24, 3), 40 * i, np.uint8) for i in range(4)]
    for i, f in enumerate(frames):
        cv2.imwrite(str(tmp_path / f'{i}.png'), f)
    assert len(datasets.load_frames(str(tmp_path), stride=2)) == 2
    video = str(tmp_path / 'clip.avi')
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*'MJPG'), 10, (24, 16))
    for f in frames:
        writer.write(f)
    writer.release()
    got = datasets.load_frames(video)
    assert len(got) == 4 and got[0].shape == (16, 24, 3)
    assert [g.shape for g in datasets.group_by_size(frames + [np.zeros((8, 8, 3), np.uint8)])] \
        == [(4, 16, 24, 3), (1, 8, 8, 3)]


def test_training_sees_the_frames_the_replay_camera_streams(tmp_path):
    # adapt's held-out split is replayed by bench-stream --skip-frames: both must number a
    # nested folder's frames alike (the training side once listed only the top level).
    for sub, shade in (('b_cam', 200), ('a_cam', 100)):
        (tmp_path / sub).mkdir()
        for i in range(2):
            lossless = [cv2.IMWRITE_WEBP_QUALITY, 101]
            cv2.imwrite(str(tmp_path / sub / f'{i}.webp'), np.full((8, 8, 3), shade + i, np.uint8),
                        lossless)
    (tmp_path / 'a_cam' / 'labels').mkdir()  # a dataset's class-id maps are not frames
    cv2.imwrite(str(tmp_path / 'a_cam' / 'labels' / '0.png'), np.full((8, 8), 3, np.uint8))
    loaded = [int(f[0, 0, 0]) for f in datasets.load_frames(str(tmp_path))]
    source = FrameSource(str(tmp_path), loop=False)
    streamed = [int(source.read()[0, 0, 0]) for _ in range(4)]
    assert loaded == streamed == [100, 101, 200, 201]


# --- augmentation -------------------------------------------------------------------------------

def test_seg_augment_identity_and_ignore():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (2, 32, 48, 3), dtype=torch.uint8)
    labels = torch.randint(0, 11, (2, 32, 48), dtype=torch.uint8)
    x, y = seg_augment(images, labels, (32, 48), (1.0, 1.0), flip=False, jitter=(0, 0, 0))
    assert torch.allclose(x, images.permute(0, 3, 1, 2).float() / 255, atol=1e-5)
    assert torch.equal(y, labels.long())
    x, y = seg_augment(images, labels, (40, 40), (0.5, 0.5), flip=True)
    assert x.shape == (2, 3, 40, 40) and y.shape == (2, 40, 40)
    assert (y == 11).any()  # zoomed out: outside pixels are void
    assert set(y.unique().tolist()) <= set(range(12))
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0


def test_cutmix_moves_the_same_box_in_every_view_and_the_labels():
    torch.manual_seed(0)
    clean = torch.rand(4, 3, 20, 30)
    degraded = clean * 0.5
    labels = torch.arange(4).view(4, 1, 1).expand(4, 20, 30).clone()
    (c, d), y = cutmix([clean, degraded], labels, prob=1.0)
    moved = y != labels
    assert moved.any(dim=(1, 2)).all()  # every sample got a box
    frac = moved.float().mean(dim=(1, 2))
    assert bool(((frac >= 0.05) & (frac <= 0.55)).all())
    assert torch.equal(y[moved], labels.roll(1, 0)[moved])  # the box came from the partner
    assert torch.allclose(d, c * 0.5)  # views stay aligned pixel for pixel
    (c0,), y0 = cutmix([clean], labels, prob=0.0)
    assert torch.equal(c0, clean) and torch.equal(y0, labels)


@pytest.mark.parametrize('override', ['cutmix_prob=1.5', 'channel_gain=-0.1', 'gamma=3',
                                      'degraded_ce_weight=-1', 'head_stride=2',
                                      'randconv_prob=1.1', 'mixstyle_prob=-0.5', 'arch=unet',
                                      'arch=fcdensenet dense_preset=42',
                                      'arch=fcdensenet mixstyle_prob=0.5',
                                      'arch=fcdensenet dense_dropout=1.5'])
def test_train_seg_refuses_augmentation_out_of_range(override, capsys, tmp_path):
    sets = [arg for kv in override.split() for arg in ('--set', kv)]
    assert train_seg_main(['--out', str(tmp_path), '--device', 'cpu'] + sets) == 2
    assert override.split()[-1].split('=')[0] in capsys.readouterr().err


def test_degraded_ce_weight_scales_only_the_degraded_views():
    """Rows: 2 clean views, their 2 degraded views, 2 unlabeled (void) views."""
    torch.manual_seed(0)
    logits = torch.randn(6, 4, 5, 5)
    aux = [torch.randn(6, 4, 5, 5)]
    labels = torch.randint(0, 4, (2, 5, 5))
    y = torch.cat([labels, labels, torch.full((2, 5, 5), 9)])
    data = types.SimpleNamespace(degraded=torch.zeros(1), ignore_index=9, class_weights=None)

    def loss(weight, lg=logits):
        cfg = SegTrainConfig(degraded_ce_weight=weight, aux_weights=(0.4,))
        return float(label_loss(lg, aux, y, data, cfg, batch=2))

    assert loss(0.999999) == pytest.approx(loss(1.0), rel=1e-5)  # one CE == mean of halves
    other = logits.clone()
    other[2:4] = torch.randn(2, 4, 5, 5)  # other degraded-view logits
    assert loss(0.0, other) == pytest.approx(loss(0.0))
    assert loss(0.5, other) != pytest.approx(loss(0.5))


def test_color_cast_shares_factors_across_views_and_stays_in_range():
    torch.manual_seed(0)
    x = torch.rand(3, 3, 8, 8)
    views = torch.stack([x, x], 1)
    out = color_cast(views, gain=0.3, gamma=0.5)
    assert torch.equal(out[:, 0], out[:, 1])
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    assert not torch.allclose(out[:, 0], x)
    assert torch.equal(color_cast(x, 0.0, 0.0), x)


def test_area_downsample_matches_uplink_operator():
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (36, 48, 3), dtype=np.uint8)
    for s in (2, 3, 4):
        ours = area_downsample(torch.from_numpy(hr).permute(2, 0, 1)[None].float() / 255, s)
        ours = (ours[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        assert np.abs(ours.astype(int) - imageops.downsample(hr, s).astype(int)).max() <= 1


def test_sr_batch_shapes():
    images = torch.randint(0, 256, (3, 40, 50, 3), dtype=torch.uint8)
    lr, hr = sr_batch(images, 5, 30, 4)
    assert hr.shape == (5, 3, 28, 28) and lr.shape == (5, 3, 7, 7)


# --- losses -------------------------------------------------------------------------------------

def test_cascade_loss_ignores_void():
    logits = torch.zeros(1, 3, 4, 4)
    labels = torch.full((1, 4, 4), 11)
    labels[0, 0, 0] = 1
    logits[0, 1, 0, 0] = 10.0  # the only labeled pixel is predicted right
    loss = losses.cascade_ce_loss(logits, [logits[..., ::2, ::2]], labels, (0.4,), 11)
    assert float(loss) < 1e-3
    assert float(losses.cascade_ce_loss(-logits, [], labels, (), 11)) > 10


def test_class_weights_boost_rare_classes():
    labels = np.array([0] * 90 + [1] * 9 + [2] + [11] * 50)
    w = losses.class_weights(labels, 4, 11, 'enet')
    assert w[2] > w[1] > w[0] > 0 and w[3] == 0
    assert abs(float((w[:3] * np.array([0.9, 0.09, 0.01])).sum()) - 1.0) < 1e-5


def test_ssim_and_kl_basics():
    x = torch.rand(2, 3, 24, 24)
    assert abs(float(losses.ssim_torch(x, x)) - 1.0) < 1e-5
    assert float(losses.ssim_torch(x, torch.rand_like(x))) < 0.5
    logits = torch.randn(2, 5, 8, 8)
    assert abs(float(losses.seg_kl_loss(logits, logits))) < 1e-6
    assert float(losses.seg_kl_loss(logits, torch.randn_like(logits))) > 0.1


def test_lr_schedule_and_lambda():
    assert common.lr_factor(0.0, 'poly', 0.1) < 0.01
    assert common.lr_factor(0.1, 'cosine', 0.1) == pytest.approx(1.0)
    assert common.lr_factor(1.0, 'cosine') == pytest.approx(0.0, abs=1e-9)
    cfg = FinetuneConfig()
    lam = Lambda(1.0)
    for _ in range(20):
        lam.update(1.0, cfg)  # drop far above the target -> lambda grows
    assert lam.value > 1.0
    assert pyramid_for(torch.zeros(1, 3, 4, 4), 3) is None
    assert set(pyramid_for(torch.zeros(1, 3, 4, 4), 4)) == {4}


# --- a few optimiser steps on a fixed batch -----------------------------------------------------

def _fit(model, loss_fn, steps=8, lr=3e-3):
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    first = None
    for _ in range(steps):
        loss = loss_fn()
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return first, float(loss_fn())


def test_seg_loss_decreases_on_fixed_batch():
    torch.manual_seed(0)
    net = build_model('icnet', {'width': 8, 'num_classes': 11, 'dropout': 0.0})
    x = torch.rand(2, 3, 64, 64)
    y = (x[:, 0] > 0.5).long() * 3  # learnable from the pixels
    y[:, :4] = 11  # void rows

    def loss_fn():
        logits, aux = net.forward_train(x)
        return losses.cascade_ce_loss(logits, aux, y)
    first, last = _fit(net, loss_fn)
    assert last < 0.9 * first


def test_sr_loss_decreases_on_fixed_batch():
    torch.manual_seed(0)
    net = build_model('carn', {'scale': 2, 'channels': 8, 'num_cascades': 1,
                               'blocks_per_cascade': 1, 'mobile': True, 'groups': 2})
    lr_img, hr = sr_batch(torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8), 4, 32, 2)
    first, last = _fit(net, lambda: losses.sr_loss(net(lr_img), hr, 1.0), steps=8)
    assert last < first


def test_finetune_loss_decreases_on_fixed_batch():
    torch.manual_seed(0)
    seg = build_model('icnet', {'width': 8, 'num_classes': 11}).eval().requires_grad_(False)
    sr = build_model('carn', {'scale': 2, 'channels': 8, 'num_cascades': 1,
                              'blocks_per_cascade': 1, 'mobile': True, 'groups': 2})
    hr = torch.rand(1, 3, 32, 32)
    lr_img = area_downsample(hr, 2)
    target = seg(hr)

    def loss_fn():
        out = sr(lr_img)
        return losses.seg_kl_loss(seg(out, pyramid_for(lr_img, 2)), target) \
            + 0.1 * (out - hr).abs().mean()
    first, last = _fit(sr, loss_fn, steps=5)
    assert last < first


# --- entry points: checkpoints and resume ------------------------------------------------------

def test_train_seg_checkpoints_and_resume(camvid, tmp_path):
    out = str(tmp_path / 'seg')
    args = ['--out', out, '--device', 'cpu', '--set', f'data={camvid}', '--set', 'width=8',
            '--set', 'batch_size=2', '--set', 'crop_h=32', '--set', 'crop_w=32',
            '--set', 'eval_every=2', '--set', 'log_every=1']
    assert train_seg_main(args + ['--set', 'steps=2']) == 0
    model, ckpt = load_checkpoint(os.path.join(out, 'best.pt'))
    assert ckpt['model_type'] == 'icnet' and ckpt['step'] == 2
    assert 'miou' in ckpt['metrics'] and ckpt['train_config']['width'] == 8
    assert model(torch.rand(1, 3, 48, 64)).shape == (1, 11, 48, 64)
    assert train_seg_main(args + ['--set', 'steps=4', '--resume']) == 0
    _, ckpt = load_checkpoint(os.path.join(out, 'last.pt'))
    assert ckpt['step'] == 4
    state = torch.load(os.path.join(out, common.STATE_FILE), weights_only=True)
    assert state['step'] == 4 and state['optimizer']['state']


def test_train_seg_style_randomisation_on_clean_training(camvid, tmp_path):
    """RandConv and MixStyle also run without degraded views (one view per sample)."""
    out = str(tmp_path / 'seg')
    assert train_seg_main(['--out', out, '--device', 'cpu', '--set', f'data={camvid}',
                           '--set', 'width=8', '--set', 'batch_size=2', '--set', 'crop_h=32',
                           '--set', 'crop_w=32', '--set', 'steps=2', '--set', 'eval_every=2',
                           '--set', 'degrade_variants=0', '--set', 'randconv_prob=1',
                           '--set', 'mixstyle_prob=1']) == 0
    _, ckpt = load_checkpoint(os.path.join(out, 'last.pt'))
    assert ckpt['train_config']['mixstyle_prob'] == 1.0


def _sr_seg_finetune(camvid, tmp_path, scale, patch, crop_hw, extra=()):
    """train-sr, train-seg and finetune-sr on tiny nets; returns the three output folders."""
    from cloudseg_ros.training import finetune_sr, train_seg, train_sr
    sr_out, seg_out, ft_out = (str(tmp_path / n) for n in ('sr', 'seg', 'ft'))
    sets = ['--device', 'cpu', '--set', f'data={camvid}', '--set', 'steps=2',
            '--set', 'log_every=1', '--set', 'eval_every=0', '--set', f'scale={scale}',
            *extra]
    assert train_sr.main(['--out', sr_out, '--set', 'channels=8', '--set', 'num_cascades=1',
                          '--set', 'groups=2', '--set', f'patch={patch}',
                          '--set', 'batch_size=2'] + sets) == 0
    assert train_seg.main(['--out', seg_out, '--device', 'cpu', '--set', f'data={camvid}',
                           '--set', 'steps=1', '--set', 'width=8', '--set', 'batch_size=2',
                           '--set', 'crop_h=32', '--set', 'crop_w=32']) == 0
    assert finetune_sr.main(['--out', ft_out, '--set', f'sr_checkpoint={sr_out}/last.pt',
                             '--set', f'seg_checkpoint={seg_out}/best.pt',
                             '--set', f'crop_h={crop_hw[0]}', '--set', f'crop_w={crop_hw[1]}',
                             '--set', 'batch_size=2'] + sets) == 0
    return sr_out, seg_out, ft_out


def test_train_sr_and_finetune_entry_points(camvid, tmp_path):
    from cloudseg_ros.training import finetune_sr
    _, _, ft_out = _sr_seg_finetune(camvid, tmp_path, 2, 16, (32, 32))
    model, ckpt = load_checkpoint(os.path.join(ft_out, 'last.pt'))
    assert ckpt['model_type'] == 'carn' and model.config.scale == 2
    assert {'miou', 'psnr', 'psnr_drop'} <= set(ckpt['metrics'])
    assert finetune_sr.main(['--out', ft_out, '--set', 'sr_checkpoint=']) == 2


def test_train_seg_robust_recipe_with_held_out_drive(camvid, tmp_path):
    """Degraded views + consistency + EMA; a held-out drive scores and selects best.pt."""
    with open(os.path.join(camvid, 'frames.csv'), 'w') as f:
        f.write('split,stem,sequence,frame_30hz,time_s\n')
        f.writelines(f'train,f{i:03d},{"B" if i == 3 else "A"},{i},0\n' for i in range(4))
    out = str(tmp_path / 'seg')
    assert train_seg_main(['--out', out, '--device', 'cpu', '--set', f'data={camvid}',
                           '--set', 'width=8', '--set', 'batch_size=2', '--set', 'crop_h=32',
                           '--set', 'crop_w=32', '--set', 'steps=3', '--set', 'eval_every=3',
                           '--set', 'degrade_variants=2', '--set', 'ema_decay=0.9',
                           '--set', 'holdout_sequences=B', '--set', 'cutmix_prob=0.5',
                           '--set', 'channel_gain=0.2', '--set', 'gamma=0.3',
                           '--set', 'randconv_prob=0.5', '--set', 'mixstyle_prob=1']) == 0
    _, ckpt = load_checkpoint(os.path.join(out, 'best.pt'))
    metrics = ckpt['metrics']
    assert {'miou', 'holdout_miou', 'agree_jpeg50'} <= set(metrics)
    assert 0.0 <= metrics['agree_jpeg50'] <= 1.0
    assert ckpt['train_config']['holdout_sequences'] == 'B'


def test_finetune_x3_on_decoded_lr_reports_jpeg_metrics(camvid, tmp_path):
    """x3 (no pyramid branch) end to end on codec-decoded LR; metrics on JPEG q50 LR too."""
    sr_out, _, ft_out = _sr_seg_finetune(camvid, tmp_path, 3, 24, (36, 48),
                                         ('--set', 'codec_variants=2'))
    _, ckpt = load_checkpoint(os.path.join(sr_out, 'last.pt'))
    assert {'psnr', 'psnr_jpeg50', 'psnr_jpeg50_bilinear'} <= set(ckpt['metrics'])
    model, ckpt = load_checkpoint(os.path.join(ft_out, 'last.pt'))
    assert model.config.scale == 3
    assert {'miou', 'miou_jpeg50', 'psnr_drop_jpeg50'} <= set(ckpt['metrics'])


def test_unlabeled_frames_split_in_time():
    from cloudseg_ros.training.seg_unlabeled import split_in_time
    frames = np.arange(10)
    train, held = split_in_time(frames, 0.7)
    assert list(train) == list(range(7)) and list(held) == [7, 8, 9]
    train, held = split_in_time(frames[:2], 0.99)  # never leaves the held-out part empty
    assert len(train) == 1 and len(held) == 1
    assert len(split_in_time(frames, 1.0)[1]) == 0
    with pytest.raises(ValueError, match='unlabeled_train_frac'):
        split_in_time(frames, 0.0)


def test_train_seg_with_unlabeled_camera_frames(camvid, tmp_path):
    """Unlabeled frames of another size join the consistency term and get their own score."""
    folder = tmp_path / 'camera'
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(5):
        cv2.imwrite(str(folder / f'u{i:02d}.png'), rng.integers(0, 255, (40, 72, 3), np.uint8))
    out = str(tmp_path / 'seg')
    args = ['--out', out, '--device', 'cpu', '--set', f'data={camvid}', '--set', 'width=8',
            '--set', 'batch_size=2', '--set', 'crop_h=32', '--set', 'crop_w=32',
            '--set', 'steps=2', '--set', 'eval_every=2', '--set', 'degrade_variants=1',
            '--set', f'unlabeled={folder}', '--set', 'unlabeled_batch=2',
            '--set', 'unlabeled_variants=2', '--set', 'unlabeled_train_frac=0.6',
            '--set', 'mixstyle_prob=1', '--set', 'randconv_prob=1']
    assert train_seg_main(args) == 0
    _, ckpt = load_checkpoint(os.path.join(out, 'last.pt'))
    assert 0.0 <= ckpt['metrics']['unlabeled_agree_jpeg50'] <= 1.0
    assert train_seg_main(args + ['--set', 'degrade_variants=0']) == 2


def test_unlabeled_consistency_only_sees_unlabeled_rows():
    """The unlabeled KL term is zero when clean and degraded unlabeled logits agree."""
    from cloudseg_ros.training.train_seg import _consistency
    cfg = SegTrainConfig(consistency_weight=0.0, unlabeled_weight=1.0, unlabeled_batch=1)
    labelled = torch.randn(4, 11, 4, 4)  # 2 clean + 2 degraded, weight 0
    same = torch.randn(1, 11, 4, 4)
    assert _consistency(torch.cat([labelled, same, same]), 2, cfg).item() == pytest.approx(0)
    other = torch.randn(1, 11, 4, 4)
    assert _consistency(torch.cat([labelled, same, other]), 2, cfg).item() > 0
