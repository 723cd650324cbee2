"""`cloudseg adapt` on the CPU: tiny random-init models, a few synthetic frames, a few steps."""
import json
import os
import shlex
import shutil

import cv2
import numpy as np
import pytest
import torch

from cloudseg_ros.inference import model_files
from cloudseg_ros.inference.engine import EngineConfig, EngineInput, SegEngine
from cloudseg_ros.nets.checkpoint import build_model, load_checkpoint, save_checkpoint
from cloudseg_ros.inference.seg_models import SegModel
from cloudseg_ros.tools import bench_stream
from cloudseg_ros.tools.stream_eval import load_clip
from cloudseg_ros.training import adapt, adapt_seg, common
from cloudseg_ros.training.config import ConfigError, load_config
from cloudseg_ros.training.finetune_sr import Lambda, train_step

NUM_CLASSES = 5
TINY_CARN = {'channels': 8, 'num_cascades': 1, 'blocks_per_cascade': 1, 'mobile': True,
             'groups': 2}
H, W = 64, 96


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    """One intra-op thread: tiny convolutions only pay for thread hand-offs on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def models_dir(tmp_path_factory):
    """seg_icnet.pt + base and aware CARN-M x2, and a base x4 (copied unchanged)."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp('models')
    save_checkpoint(root / model_files.SEG_FILE, build_model(
        'icnet', {'num_classes': NUM_CLASSES, 'width': 4, 'low_blocks': 1}), 'icnet')
    for scale, variants in ((2, ('base', 'aware')), (4, ('base',))):
        net = build_model('carn', {'scale': scale, **TINY_CARN})
        for variant in variants:
            torch.nn.init.normal_(net.exit.weight, std=0.05)  # aware differs from base
            save_checkpoint(root / model_files.sr_file(scale, variant), net, 'carn')
    return str(root)


@pytest.fixture(scope='module')
def frames_dir(tmp_path_factory):
    """Eight PNG frames of a panning scene: blocks of colour plus a gradient and noise."""
    root = tmp_path_factory.mktemp('frames')
    rng = np.random.default_rng(0)
    scene = np.repeat(np.repeat(rng.integers(0, 256, (H // 8, 2 * W // 8, 3)), 8, 0), 8, 1)
    for i in range(8):
        img = scene[:, 4 * i:4 * i + W] * 0.8 + np.linspace(0, 50, W)[None, :, None]
        img = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(root / f'f{i:03d}.png'), img)
    return str(root)


def _args(models_dir, frames_dir, out, steps):
    sets = [f'steps={steps}', 'log_every=1', 'eval_every=0', 'batch_size=2', 'codec_variants=2',
            'holdout_frac=0.25', 'blend_frames=4', 'lr=3e-3', 'seg_steps=0',
            'keep_best=false']  # these tests check what training writes; keep_best has its own
    return (['--input', frames_dir, '--scale', '2', '--models', models_dir, '--out', out,
             '--device', 'cpu'] + [a for s in sets for a in ('--set', s)])


@pytest.fixture(scope='module')
def adapted(models_dir, frames_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp('adapted') / 'models_cam')
    assert adapt.main(_args(models_dir, frames_dir, out, 3)) == 0
    return out


def test_output_is_a_complete_models_folder(adapted):
    names = set(os.listdir(adapted))
    assert {'seg_icnet.pt', 'sr_carnm_x2_aware.pt', 'sr_carnm_x2.pt', 'sr_carnm_x4.pt',
            'adapt.json'} <= names
    model, ckpt = load_checkpoint(os.path.join(adapted, 'sr_carnm_x2_aware.pt'))
    assert ckpt['model_type'] == 'carn' and ckpt['step'] == 3 and model.config.scale == 2
    with open(os.path.join(adapted, 'adapt.json')) as f:
        report = json.load(f)
    assert report['scale'] == 2 and report['frames_train'] == 6
    assert report['h264_preset'] == 'veryfast'  # the robot's: LR as the uplink sends it
    assert isinstance(report['warnings'], list)
    assert report['frames_holdout'] == 2 and report['steps'] == 3
    for when in ('before', 'after'):
        assert {'agree_miou', 'agree_miou_jpeg50', 'agree_miou_h264crf28'} <= set(report[when])
        assert 0.0 <= report[when]['agree_miou'] <= 1.0
        for suffix in ('_jpeg50', '_h264crf28'):  # the robot at scale 1, scored apart
            assert 0.0 <= report[when]['full_agree_miou' + suffix] <= 1.0
    for suffix in ('_jpeg50', '_h264crf28'):  # SR alone (seg_steps=0) leaves the net as it was
        key = 'full_agree_miou' + suffix
        assert report['after'][key] == report['before'][key]
    assert report['warnings'] == []
    assert report['blend_alpha'] is not None and report['psnr_drop_db'] is not None


def _assert_runs_in_the_engine(folder):
    engine = SegEngine(EngineConfig(
        seg_checkpoint=model_files.seg_checkpoint(folder),
        sr_checkpoints=model_files.sr_checkpoints(folder, 'aware'), device='cpu',
        seg_scale_checkpoints=model_files.seg_scale_checkpoints(folder), warmup=False))
    assert engine.supported_scales() == [1, 2]
    lr = np.random.default_rng(1).integers(0, 256, (H // 2, W // 2, 3), dtype=np.uint8)
    mask = engine.process([EngineInput(lr, 2, (W, H))])[0].mask
    assert mask.shape == (H, W) and mask.dtype == np.uint8 and mask.max() < NUM_CLASSES


def test_adapted_models_run_in_the_engine(adapted):
    _assert_runs_in_the_engine(adapted)


def test_resume_continues_from_the_saved_step(adapted, models_dir, frames_dir, tmp_path,
                                              capsys):
    out = str(tmp_path / 'resumed')
    shutil.copytree(adapted, out)
    assert adapt.main(_args(models_dir, frames_dir, out, 5) + ['--resume']) == 0
    printed = capsys.readouterr().out
    assert 'from step 3' in printed
    assert f'--skip-frames 6 --max-frames 2 --models {out}' in printed
    _, ckpt = load_checkpoint(os.path.join(out, 'sr_carnm_x2_aware.pt'))
    assert ckpt['step'] == 5
    state = torch.load(os.path.join(out, adapt.WORK_DIR, common.STATE_FILE), weights_only=True)
    assert state['step'] == 5 and 'lambda' in state['extra']


def test_train_step_lowers_the_loss_on_one_frame(models_dir, frames_dir):
    # One frame, clean LR: a near-fixed batch.
    cfg, device, sr, base, seg, pools = _one_frame_setup(
        models_dir, frames_dir, ['adaptive_lambda=false', 'lr=3e-3'])
    optimizer = common.build_optimizer(sr.parameters(), 'adamw', cfg.lr, 0.0)
    lam = Lambda(cfg.l1_weight)
    losses = [float(train_step(sr, base, seg, optimizer, pools, lam, cfg, device)['loss'].detach())
              for _ in range(10)]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])


def test_command_line_keys_cannot_be_set(models_dir, frames_dir, tmp_path, capsys):
    args = _args(models_dir, frames_dir, str(tmp_path / 'o'), 1) + ['--set', 'scale=3']
    assert adapt.main(args) == 2
    assert 'scale' in capsys.readouterr().err
    args = _args(models_dir, models_dir, models_dir, 1)
    assert adapt.main(args) == 2
    for bad, said in (('seg_steps=-1', 'seg_steps must be >= 0'), ('seg_lr=0', 'seg_lr must be'),
                      ('seg_full_weight=-1', 'seg_full_weight must be >= 0'),
                      ('h264_preset=placebo2', "unknown x264 preset 'placebo2'")):
        args = _args(models_dir, frames_dir, str(tmp_path / 'o'), 1) + ['--set', bad]
        assert adapt.main(args) == 2
        assert said in capsys.readouterr().err
    no_base = tmp_path / 'no_base'  # the PSNR guard needs the base SR beside the aware one
    shutil.copytree(models_dir, no_base)
    (no_base / 'sr_carnm_x2.pt').unlink()
    assert adapt.main(_args(str(no_base), frames_dir, str(tmp_path / 'o'), 1)) == 2
    assert 'checkpoint not found: ' + str(no_base / 'sr_carnm_x2.pt') in capsys.readouterr().err


def test_seg_stage_writes_an_adapted_segmentation_net(models_dir, frames_dir, tmp_path,
                                                      capsys):
    out = str(tmp_path / 'with_seg')
    assert adapt.main(_args(models_dir, frames_dir, out, 2) + ['--set', 'seg_steps=3']) == 0
    source, _ = load_checkpoint(os.path.join(models_dir, 'seg_icnet.pt'))
    adapted_net, ckpt = load_checkpoint(os.path.join(out, 'seg_icnet_x2.pt'))
    assert ckpt['model_type'] == 'icnet' and ckpt['step'] == 3
    changed = [k for k, v in adapted_net.state_dict().items()
               if v.is_floating_point() and not torch.allclose(v, source.state_dict()[k])]
    assert changed, 'the segmentation stage left every weight as it was'
    with open(os.path.join(models_dir, 'seg_icnet.pt'), 'rb') as a, \
            open(os.path.join(out, 'seg_icnet.pt'), 'rb') as b:
        assert a.read() == b.read(), 'full-resolution frames must keep the original net'
    with open(os.path.join(out, 'adapt.json')) as f:
        report = json.load(f)
    assert report['seg_adapted'] and report['seg_steps'] == 3 and report['steps'] == 2
    assert 0.0 <= report['after']['agree_miou'] <= 1.0
    after, before = report['after'], report['before']
    full = [k for k in before if k.startswith('full_agree_miou')]
    assert full and all(after[k] == before[k] for k in full)  # what scale 1 is served with
    assert all(0.0 <= after['adapted_net_' + k] <= 1.0 for k in full)
    assert 'seg_icnet_x2.pt' in report['files']
    lowered = after['agree_miou'] < report['sr_stage']['agree_miou']  # tiny nets: either way
    assert [('lowered held-out agreement' in w) for w in report['warnings']] == (
        [True] if lowered else [])
    _assert_runs_in_the_engine(out)
    resumed = str(tmp_path / 'resumed')
    shutil.copytree(out, resumed)
    assert adapt.main(_args(models_dir, frames_dir, resumed, 2)
                      + ['--set', 'seg_steps=5', '--resume']) == 0
    assert 'on SR(decoded LR), HR and decoded HR, from step 3' in capsys.readouterr().out
    assert load_checkpoint(os.path.join(resumed, 'seg_icnet_x2.pt'))[1]['step'] == 5


def _one_frame_setup(models_dir, frames_dir, sets):
    cfg = load_config(adapt.AdaptConfig, None, ['codec_variants=0', 'batch_size=1'] + sets)
    cfg = adapt.dataclasses.replace(
        cfg, scale=2, extra_frames=frames_dir, max_train_items=1,
        sr_checkpoint=os.path.join(models_dir, 'sr_carnm_x2_aware.pt'),
        seg_checkpoint=os.path.join(models_dir, 'seg_icnet.pt'))
    frames, _ = adapt.load_split(cfg)
    cfg = adapt.fit_crop(cfg, adapt.group_by_size(frames))
    device = torch.device('cpu')
    torch.manual_seed(0)
    sr, base, seg = adapt.build_models(cfg, device)
    return cfg, device, sr, base, seg, adapt.build_pools(frames, cfg, device)


def test_seg_step_lowers_the_distillation_loss_on_one_frame(models_dir, frames_dir):
    cfg, device, sr, _, seg, pools = _one_frame_setup(models_dir, frames_dir, ['seg_lr=3e-3'])
    student = adapt_seg.build_student(seg)
    optimizer = common.build_optimizer(student.parameters(), 'adamw', cfg.seg_lr, 0.0)
    losses = [float(adapt_seg.seg_step(student, seg, sr, optimizer, pools, cfg,
                                       device)['loss'].detach()) for _ in range(10)]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    assert not any(p.requires_grad for p in seg.parameters())  # the teacher stays frozen


def test_seg_step_learns_decoded_full_resolution_frames(models_dir, frames_dir):
    cfg, device, sr, _, seg, pools = _one_frame_setup(
        models_dir, frames_dir, ['seg_lr=3e-3', 'seg_hr_weight=0', 'seg_full_variants=2',
                                 'jpeg_quality_max=40', 'h264_crf_min=34'])
    full = adapt_seg.full_resolution_pools(pools, cfg, device)
    assert full.lr_pools[0].shape == (1, 2) + tuple(pools.pools[0].shape[1:])
    assert not torch.equal(full.lr_pools[0][:, 0], pools.pools[0])  # really went through a codec
    off = adapt_seg.full_resolution_pools(pools, adapt.dataclasses.replace(cfg, seg_full_weight=0),
                                          device)
    assert off is None
    student = adapt_seg.build_student(seg)
    optimizer = common.build_optimizer(student.parameters(), 'adamw', cfg.seg_lr, 0.0)
    kls = [float(adapt_seg.seg_step(student, seg, sr, optimizer, pools, cfg, device,
                                    full)['kl_full'].detach()) for _ in range(10)]
    assert np.mean(kls[-3:]) < np.mean(kls[:3])


def test_seg_stage_leaves_a_foreign_network_as_it_is(capsys):
    foreign = SegModel(torch.nn.Conv2d(3, NUM_CLASSES, 1), 'torchscript', 'their.pt',
                       [f'c{i}' for i in range(NUM_CLASSES)],
                       np.zeros((NUM_CLASSES, 3), np.uint8), 255)
    assert adapt_seg.student_for(foreign, 1500) is None
    assert 'segmentation stage skipped: their.pt is a torchscript model' in capsys.readouterr().out
    with pytest.raises(ConfigError, match='their.pt is a torchscript model'):
        adapt_seg.build_student(foreign)


def test_default_crop_is_the_whole_frame_up_to_1080p():
    """The net pools context over the whole frame at run time, so adapt trains on whole frames
    (as multiples of the scale); beyond 1920x1080 it crops, which bounds memory."""
    cfg = adapt.dataclasses.replace(adapt.AdaptConfig(), scale=4)
    for frame_hw, crop_hw in (((722, 1281), (720, 1280)), ((2160, 3840), (1080, 1920))):
        fitted = adapt.fit_crop(cfg, [np.zeros((1,) + frame_hw + (3,), np.uint8)])
        assert (fitted.crop_h, fitted.crop_w) == crop_hw


def test_a_full_resolution_drop_is_announced():
    before = {'agree_miou': 0.58, 'full_agree_miou_jpeg50': 0.865,
              'full_agree_miou_h264crf28': 0.84}
    worse = {'agree_miou': 0.64, 'full_agree_miou_jpeg50': 0.826,
             'full_agree_miou_h264crf28': 0.835}
    [warning] = adapt.full_resolution_warnings(before, worse)
    assert 'full_agree_miou_jpeg50 0.8650 -> 0.8260' in warning and 'seg_steps=0' in warning
    within = dict(worse, full_agree_miou_jpeg50=0.858)
    assert adapt.full_resolution_warnings(before, within) == []
    assert adapt.full_resolution_warnings({}, {}) == []  # no held-out frames: nothing to say


def test_a_segmentation_stage_that_lowers_or_skips_the_held_out_check_is_announced():
    sr_stage, better, worse = {'agree_miou': 0.61}, {'agree_miou': 0.63}, {'agree_miou': 0.60}
    assert adapt.seg_stage_warnings(sr_stage, better, checked=True) == []
    [warning] = adapt.seg_stage_warnings(sr_stage, worse, True, beside='seg_icnet_x4.pt')
    assert '0.6100 after the SR stage -> 0.6000' in warning
    assert 'seg_steps=0' in warning and 'remove seg_icnet_x4.pt' in warning
    assert 'remove' not in adapt.seg_stage_warnings(sr_stage, worse, True)[0]  # replaced net
    [unchecked] = adapt.seg_stage_warnings({}, {}, checked=False)
    assert 'without held-out frames' in unchecked and 'holdout_frac' in unchecked


def test_kept_stage_is_the_best_held_out_one_and_ties_go_to_the_least_changed():
    source, sr, seg = {'agree_miou': 0.60}, {'agree_miou': 0.62}, {'agree_miou': 0.61}
    assert adapt.kept_stage({'source': source, 'sr': sr, 'sr+seg': seg}, True) == 'sr'
    assert adapt.kept_stage({'source': source, 'sr': sr, 'sr+seg': seg}, False) == 'sr+seg'
    assert adapt.kept_stage({'source': sr, 'sr': source}, True) == 'source'
    assert adapt.kept_stage({'source': sr, 'sr': dict(sr)}, True) == 'source'  # a tie
    assert adapt.kept_stage({'source': {}, 'sr': {}}, True) == 'sr'  # nothing held out
    assert adapt.kept_stage({'source': source, 'sr': {'agree_miou': float('nan')}}, True) \
        == 'source'


def test_stages_left_out_of_the_folder_are_announced():
    cfg = adapt.AdaptConfig(scale=4, seg_checkpoint='/m/seg_icnet.pt')
    stages = {'source': {'agree_miou': 0.62}, 'sr': {'agree_miou': 0.61},
              'sr+seg': {'agree_miou': 0.60}}
    seg_warning, source_warning = adapt.adapt_warnings(stages, 'source', cfg, True)
    assert 'lowered held-out agreement' in seg_warning and 'not written' in seg_warning
    assert 'source 0.6200; sr 0.6100, sr+seg 0.6000' in source_warning
    assert 'keep_best=false' in source_warning
    [kept_anyway] = adapt.adapt_warnings(stages, 'sr+seg', cfg, True)
    assert 'remove seg_icnet_x4.pt' in kept_anyway


def test_adaptation_that_lowers_held_out_agreement_leaves_the_source_nets(
        models_dir, frames_dir, tmp_path):
    out = tmp_path / 'wrecked'
    # A learning rate that wrecks the SR net, and no blend back toward the base net.
    sets = ['lr=20', 'final_max_drop_db=0', 'keep_best=true', 'seg_steps=2', 'seg_lr=1']
    assert adapt.main(_args(models_dir, frames_dir, str(out), 3)
                      + [a for s in sets for a in ('--set', s)]) == 0
    report = json.loads((out / 'adapt.json').read_text())
    assert report['kept'] == 'source' and set(report['stages']) == {'source', 'sr', 'sr+seg'}
    # Lower, or equal (a tie keeps the source too): never higher than the source's.
    assert report['stages']['sr']['agree_miou'] <= report['before']['agree_miou']
    assert report['after'] == report['before'] and not report['seg_adapted']
    with open(os.path.join(models_dir, 'sr_carnm_x2_aware.pt'), 'rb') as source:
        assert (out / 'sr_carnm_x2_aware.pt').read_bytes() == source.read()
    assert not (out / 'seg_icnet_x2.pt').exists()
    assert any('no stage raised held-out agreement' in w for w in report['warnings'])
    _assert_runs_in_the_engine(str(out))


def test_adapted_net_goes_beside_the_shipped_name_and_replaces_another():
    shipped = adapt.AdaptConfig(scale=4, seg_checkpoint='/m/seg_icnet.pt')
    assert adapt.adapted_seg_file(shipped) == 'seg_icnet_x4.pt'
    custom = adapt.AdaptConfig(scale=4, seg_checkpoint='/m/mynet.pt')
    assert adapt.adapted_seg_file(custom) == 'mynet.pt'
    before = {'agree_miou': 0.5, 'full_agree_miou_jpeg50': 0.9}
    after = {'agree_miou': 0.6, 'full_agree_miou_jpeg50': 0.8}
    served = adapt.full_resolution_as_served(after, before, shipped)
    assert served == {'agree_miou': 0.6, 'full_agree_miou_jpeg50': 0.9,
                      'adapted_net_full_agree_miou_jpeg50': 0.8}
    assert adapt.full_resolution_as_served(after, before, custom) == after
    assert adapt.full_resolution_warnings(before, after)  # the replaced net is announced


def test_sr_only_adaptation_drops_the_stale_net_of_its_scale_and_keeps_others(
        models_dir, frames_dir, tmp_path, capsys):
    source = tmp_path / 'adapted_before'
    shutil.copytree(models_dir, source)
    for scale in (2, 4):  # as if an earlier run had adapted the net for x2 and x4
        shutil.copy(source / 'seg_icnet.pt', source / f'seg_icnet_x{scale}.pt')
    out = tmp_path / 'out'
    assert adapt.main(_args(str(source), frames_dir, str(out), 1)) == 0  # x2, SR only
    assert 'seg_icnet_x2.pt not copied' in capsys.readouterr().out
    assert not (out / 'seg_icnet_x2.pt').exists() and (out / 'seg_icnet_x4.pt').exists()


def test_held_out_stream_command_streams_exactly_the_held_out_frames(models_dir, frames_dir):
    cfg = adapt.build_config(adapt.parse_args(_args(models_dir, frames_dir, 'out', 3)))
    train, held = adapt.load_split(cfg)
    command = adapt.held_out_stream_command(cfg, 'models cam', len(train), len(held))
    args = bench_stream.parse_args(shlex.split(command)[2:])
    assert (args.models, args.sr_scales, args.downsample_scales) == ('models cam', [2], [2])
    clip = load_clip(args.input, max_frames=args.max_frames, skip_frames=args.skip_frames)
    assert len(clip.frames) == len(held) == 2
    for streamed, held_out in zip(clip.frames, held):
        np.testing.assert_array_equal(streamed, held_out)


def test_an_unchecked_segmentation_stage_is_announced(models_dir, frames_dir, tmp_path, capsys):
    out = str(tmp_path / 'unchecked')
    assert adapt.main(_args(models_dir, frames_dir, out, 1)
                      + ['--set', 'holdout_frac=0', '--set', 'seg_steps=1']) == 0
    with open(os.path.join(out, 'adapt.json')) as f:
        report = json.load(f)
    assert report['frames_holdout'] == 0 and report['seg_adapted']
    assert ['without held-out frames' in w for w in report['warnings']] == [True]
    printed = capsys.readouterr().out
    assert 'warning: the segmentation stage ran without held-out frames' in printed
    assert '--skip-frames' not in printed  # no held-out frames to stream
