"""Networks on tiny configs: shapes, pyramid reuse, checkpoint round trip and its errors."""
import copy

import pytest
import torch
import torch.nn.functional as F

from cloudseg_ros.nets.carn import CARN, CARNConfig, carn_m, count_parameters, densify_group_convs
from cloudseg_ros.nets.checkpoint import (build_model, CheckpointError, load_checkpoint,
                                          save_checkpoint)
from cloudseg_ros.nets.fcdensenet import FCDenseNet, FCDenseNetConfig, fcdensenet_config
from cloudseg_ros.nets.icnet import area_down, fuse_batchnorm, ICNet, ICNetConfig


def tiny_carn(scale: int, mobile: bool) -> CARN:
    """A CARN small enough for a 2-core CI machine."""
    return CARN(CARNConfig(scale=scale, channels=8, num_cascades=2, blocks_per_cascade=2,
                           mobile=mobile, groups=2)).eval()


def tiny_icnet(num_classes: int = 5, head_stride: int = 8) -> ICNet:
    """An ICNet small enough for a 2-core CI machine, in eval mode (BN uses running stats)."""
    return ICNet(ICNetConfig(num_classes=num_classes, width=4, low_blocks=1,
                             head_stride=head_stride)).eval()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize('mobile', [False, True])
@pytest.mark.parametrize('scale', [2, 3, 4])
def test_carn_output_shape_on_odd_sizes(scale, mobile):
    model = tiny_carn(scale, mobile)
    with torch.no_grad():
        y = model(torch.rand(2, 3, 17, 23))
    assert y.shape == (2, 3, 17 * scale, 23 * scale)
    assert y.dtype == torch.float32


def test_fresh_carn_is_the_bilinear_baseline_and_can_learn():
    model = tiny_carn(2, mobile=True).train()
    x = torch.rand(1, 3, 12, 10)
    bilinear = F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=False)
    y = model(x)
    assert torch.allclose(y, bilinear)
    y.square().mean().backward()
    assert model.exit.weight.grad.abs().sum() > 0  # zero init does not block learning


def test_carn_m_shares_blocks_and_is_smaller_than_carn():
    # The paper's counts for the single-scale x4 models are ~1.1M (CARN) and ~0.3M (CARN-M).
    assert count_parameters(carn_m(4)) < count_parameters(CARN(CARNConfig(scale=4))) / 3
    with pytest.raises(ValueError, match='scale'):
        CARN(CARNConfig(scale=5))


def test_inference_rewrites_keep_the_function():
    sr = tiny_carn(2, mobile=True)
    torch.nn.init.normal_(sr.exit.weight, std=0.1)
    dense = densify_group_convs(copy.deepcopy(sr))
    assert not any(getattr(m, 'groups', 1) > 1 for m in dense.modules())
    seg = tiny_icnet()
    for bn in seg.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):  # non-trivial statistics to fold
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    fused = fuse_batchnorm(copy.deepcopy(seg))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    x = torch.rand(1, 3, 24, 40)
    with torch.no_grad():
        assert torch.allclose(sr(x), dense(x), atol=1e-5)
        assert torch.allclose(seg(x), fused(x), atol=1e-4)


@pytest.mark.parametrize('head_stride', [8, 4])
@pytest.mark.parametrize('size', [(90, 120), (360, 480), (17, 23), (33, 65)])
def test_icnet_logits_match_input_size(size, head_stride):
    model = tiny_icnet(head_stride=head_stride)
    with torch.no_grad():
        y = model(torch.rand(1, 3, *size))
    assert y.shape == (1, 5, *size)


@pytest.mark.parametrize('head_stride', [8, 4])
@pytest.mark.parametrize('size', [(96, 128), (90, 122)])
def test_pyramid_reuse_of_area_downsized_input_equals_plain_forward(size, head_stride):
    model = tiny_icnet(head_stride=head_stride)
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        plain = model(x)
        reused4 = model(x, {4: area_down(x, 4)})
        reused24 = model(x, {2: area_down(x, 2), 4: area_down(x, 4)})
        other = model(x, {4: torch.rand_like(area_down(x, 4))})
    assert torch.allclose(plain, reused4)
    assert torch.allclose(plain, reused24)
    assert not torch.allclose(plain, other, atol=1e-4)


def test_pyramid_rejects_unknown_levels():
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match='pyramid'):
        tiny_icnet()(x, {3: x})


def test_forward_train_returns_aux_logits_coarse_to_fine():
    model = tiny_icnet().train()
    logits, aux = model.forward_train(torch.rand(2, 3, 45, 61))
    assert logits.shape == (2, 5, 45, 61)
    assert len(aux) == 2 and all(a.shape == logits.shape for a in aux)
    (logits.mean() + sum(a.mean() for a in aux)).backward()
    assert model.cff_low_mid.aux.weight.grad is not None


def test_stride_4_head_adds_a_finer_stage_and_classifies_at_a_quarter():
    """The 1/4 head has a third aux output and its classifier sees 1/4-resolution features."""
    model = tiny_icnet(head_stride=4).train()
    logits, aux = model.forward_train(torch.rand(2, 3, 64, 96))
    assert len(aux) == 3 and all(a.shape == logits.shape for a in aux)
    (logits.mean() + sum(a.mean() for a in aux)).backward()
    assert model.cff_fine.fine[0].weight.grad is not None
    for stride in (8, 4):
        net, seen = tiny_icnet(head_stride=stride), []
        net.classifier.register_forward_hook(lambda _m, _i, out: seen.append(out.shape[-2:]))
        with torch.no_grad():
            net(torch.rand(1, 3, 64, 96))
        assert tuple(seen[0]) == (64 // stride, 96 // stride)


def test_icnet_rejects_an_unknown_head_stride():
    with pytest.raises(ValueError, match='head_stride'):
        tiny_icnet(head_stride=2)


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    model = tiny_icnet()
    compiled_like = torch.nn.Module()
    compiled_like._orig_mod = model  # what torch.compile's wrapper looks like to state_dict()
    path = save_checkpoint(tmp_path / 'seg.pt', compiled_like, 'icnet', model.config, step=7,
                           metrics={'miou': 0.5}, train_config={'data': tmp_path})
    raw = torch.load(path, weights_only=True)
    assert raw['format_version'] == 1 and raw['step'] == 7
    assert not any(k.startswith('_orig_mod.') for k in raw['model'])
    assert raw['train_config'] == {'data': str(tmp_path)}
    loaded, ckpt = load_checkpoint(path)
    assert not loaded.training and ckpt['metrics'] == {'miou': 0.5}
    x = torch.rand(1, 3, 40, 56)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert [p.name for p in tmp_path.iterdir()] == ['seg.pt']  # no temp file left behind


def test_half_weights_round_trip_is_close_and_smaller(tmp_path):
    model = tiny_carn(2, mobile=False)
    torch.nn.init.normal_(model.exit.weight, std=0.01)  # make the residual non-trivial
    full = save_checkpoint(tmp_path / 'full.pt', model, 'carn', model.config)
    half = save_checkpoint(tmp_path / 'half.pt', model, 'carn', model.config, half_weights=True)
    loaded, _ = load_checkpoint(half)
    assert loaded.exit.weight.dtype == torch.float32
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(model(x), loaded(x), atol=1e-3)
    assert half.stat().st_size < full.stat().st_size


def tiny_fcdensenet(num_classes: int = 5) -> FCDenseNet:
    """Two down levels of one layer each: the FC-DenseNet wiring at CI cost."""
    return FCDenseNet(FCDenseNetConfig(num_classes=num_classes, down_layers=(1, 2),
                                       bottleneck_layers=1, growth=4, stem=6)).eval()


@pytest.mark.parametrize('size', [(8, 8), (30, 45), (37, 21)])
def test_fcdensenet_pads_to_its_stride_and_returns_full_size_logits(size):
    model = tiny_fcdensenet()
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        logits = model(x)
        assert logits.shape == (2, 5, *size)
        # It has no pyramid branch: a received LR frame changes nothing.
        assert torch.equal(model(x, pyramid={4: torch.rand(2, 3, 2, 2)}), logits)
    logits, aux = model.train().forward_train(torch.rand(1, 3, 16, 24))
    assert logits.shape == (1, 5, 16, 24) and aux == []


@pytest.mark.parametrize('preset,millions', [('56', 1.5), ('67', 3.5), ('103', 9.4)])
def test_fcdensenet_presets_have_the_papers_size(preset, millions):
    """Jegou et al. Table 2 lists 1.5 M / 3.5 M / 9.4 M parameters (CamVid, 11 classes)."""
    model = FCDenseNet(fcdensenet_config(preset))
    assert count_parameters(model) / 1e6 == pytest.approx(millions, rel=0.1)


def test_fcdensenet_checkpoint_round_trip(tmp_path):
    model = tiny_fcdensenet()
    path = save_checkpoint(tmp_path / 'dense.pt', model, 'fcdensenet')
    loaded, ckpt = load_checkpoint(path)
    assert ckpt['model_type'] == 'fcdensenet' and ckpt['model_config']['down_layers'] == (1, 2)
    x = torch.rand(1, 3, 12, 20)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    with pytest.raises(ValueError, match='preset'):
        fcdensenet_config('42')


@pytest.mark.parametrize('bad, match', [({'down_layers': ()}, 'down_layers'),
                                        ({'down_layers': (2, 0)}, 'down_layers'),
                                        ({'growth': 0}, 'growth'),
                                        ({'dropout': 1.0}, 'dropout')])
def test_fcdensenet_config_that_cannot_build_is_a_value_error(bad, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        build_model('fcdensenet', bad)
    # ... which a checkpoint with such a config reports as a CheckpointError, not a crash.
    path = save_checkpoint(tmp_path / 'd.pt', tiny_fcdensenet(), 'fcdensenet')
    raw = torch.load(path, weights_only=True)
    raw['model_config'].update(bad)
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)


def test_build_model_rejects_unknown_config_keys():
    with pytest.raises(ValueError, match='colour'):
        build_model('carn', {'scale': 2, 'colour': 1})


def test_missing_checkpoint_names_path_and_remedy(tmp_path):
    with pytest.raises(CheckpointError, match='not found.*nope.pt.*train'):
        load_checkpoint(tmp_path / 'nope.pt')


def test_corrupted_and_foreign_checkpoints_raise(tmp_path):
    bad = tmp_path / 'bad.pt'
    bad.write_bytes(b'definitely not a checkpoint')
    with pytest.raises(CheckpointError, match='cannot read'):
        load_checkpoint(bad)
    model = tiny_carn(2, mobile=True)
    path = save_checkpoint(tmp_path / 'sr.pt', model, 'carn')
    bad.write_bytes(path.read_bytes()[:-100])  # truncated copy, as after an interrupted scp
    with pytest.raises(CheckpointError, match='cannot read'):
        load_checkpoint(bad)
    ckpt = torch.load(path, weights_only=True)
    for change, pattern in [({'model_type': 'yolo'}, "unknown model_type 'yolo'"),
                            ({'format_version': 99}, 'format_version 99'),
                            ({'model_config': {**ckpt['model_config'], 'channels': 16}},
                             'do not match.*entry.weight')]:
        torch.save({**ckpt, **change}, tmp_path / 'changed.pt')
        with pytest.raises(CheckpointError, match=pattern):
            load_checkpoint(tmp_path / 'changed.pt')
    torch.save([1, 2], tmp_path / 'list.pt')
    with pytest.raises(CheckpointError, match='not a checkpoint dict'):
        load_checkpoint(tmp_path / 'list.pt')
