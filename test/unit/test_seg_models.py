"""Bring-your-own segmentation models: TorchScript and torch.export files with their YAML."""
import numpy as np
import pytest
import torch
from torch import nn
import torch.nn.functional as F
import yaml

from cloudseg_ros.core.palette import CAMVID_NAMES, CAMVID_PALETTE
from cloudseg_ros.inference.engine import EngineConfig, EngineError, EngineInput, SegEngine
from cloudseg_ros.inference.seg_models import (load_seg_model, model_kind, SegModelError,
                                               sidecar_yaml)
from cloudseg_ros.nets.checkpoint import build_model, CheckpointError, save_checkpoint

# torch 2.10+ deprecates TorchScript; users still have such files, so it stays supported.
pytestmark = pytest.mark.filterwarnings('ignore:`torch.jit.*deprecated:DeprecationWarning')
NUM_CLASSES = 4
NAMES = ['road', 'car', 'person', 'sky']
COLORS = [[128, 64, 128], [0, 0, 142], [220, 20, 60], [70, 130, 180]]
MEAN, STD = [0.5, 0.4, 0.3], [0.25, 0.2, 0.5]


class TinySeg(nn.Module):
    """(B, 3, H, W) -> logits (B, C, ceil(H/2), ceil(W/2)): the output is below input size."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.down = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.head = nn.Conv2d(8, num_classes, 1)

    def forward(self, x):
        return self.head(torch.relu(self.down(x)))


class Flat(TinySeg):
    def forward(self, x):
        return super().forward(x).mean(1)  # (B, H, W): not logits


class Pair(TinySeg):
    def forward(self, x):
        logits = super().forward(x)
        return logits, logits


class Ids(TinySeg):
    def forward(self, x):
        return super().forward(x).argmax(1, keepdim=True)  # int64 (B, 1, h, w)


class FlatWhenLarge(TinySeg):
    """Logits below 100 rows, a 3-D tensor above: only the run-time guard can see it."""

    def forward(self, x):
        logits = self.head(torch.relu(self.down(x)))  # TorchScript has no super()
        if x.shape[2] > 100:
            return logits.mean(1)
        return logits


def _meta(**overrides):
    meta = {'class_names': NAMES, 'colors': COLORS, 'normalize': {'mean': MEAN, 'std': STD},
            'ignore_index': 255, 'size_multiple': 8}
    meta.update(overrides)
    return {k: v for k, v in meta.items() if v is not None}


def _write_yaml(model_path, meta):
    with open(sidecar_yaml(model_path), 'w') as f:
        yaml.safe_dump(meta, f)


def save_torchscript(module, path, meta=None, script=False):
    torch.manual_seed(0)
    module = module.eval()
    saved = torch.jit.script(module) if script else torch.jit.trace(module,
                                                                    torch.rand(1, 3, 32, 48))
    torch.jit.save(saved, str(path))
    if meta is not None:
        _write_yaml(path, meta)
    return str(path)


def save_exported(module, path, meta=None, dynamic=True):
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 48)
    shapes = None
    if dynamic:
        dims = {0: torch.export.Dim('batch', max=64),
                2: torch.export.Dim('height', min=8, max=4096),
                3: torch.export.Dim('width', min=8, max=4096)}
        shapes = (dims,)
    torch.export.save(torch.export.export(module.eval(), (x,), dynamic_shapes=shapes), str(path))
    if meta is not None:
        _write_yaml(path, meta)
    return str(path)


@pytest.fixture(scope='module')
def external(tmp_path_factory):
    """{'torchscript': path, 'export': path} of the same TinySeg weights, with a YAML each."""
    root = tmp_path_factory.mktemp('byo')
    torch.manual_seed(0)
    net = TinySeg()
    return {'torchscript': save_torchscript(net, root / 'tiny.pt', _meta()),
            'export': save_exported(net, root / 'tiny.pt2', _meta()), 'net': net}


def reference_logits(net, x):
    """What the wrapper must compute: normalise, pad to 8, run, upsample, crop."""
    h, w = x.shape[-2:]
    hp, wp = -(-h // 8) * 8, -(-w // 8) * 8
    z = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    z = F.pad(z, (0, wp - w, 0, hp - h), mode='replicate')
    with torch.no_grad():
        out = F.interpolate(net(z), size=(hp, wp), mode='bilinear', align_corners=False)
    return out[..., :h, :w]


@pytest.mark.parametrize('kind', ['torchscript', 'export'])
def test_external_model_matches_the_network_and_describes_itself(external, kind):
    seg = load_seg_model(external[kind], 'cpu')
    assert model_kind(external[kind]) == kind == seg.kind
    assert seg.num_classes == NUM_CLASSES and seg.class_names == NAMES
    assert seg.colors.dtype == np.uint8 and seg.colors.tolist() == COLORS
    assert seg.ignore_index == 255 and not seg.supports_pyramid
    x = torch.rand(3, 3, 37, 50, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = seg(x)
        ignored = seg(x, {4: torch.zeros(3, 3, 9, 12)})  # the pyramid is ICNet's only
    assert out.shape == (3, NUM_CLASSES, 37, 50)
    torch.testing.assert_close(out, reference_logits(external['net'], x))
    torch.testing.assert_close(ignored, out)


@pytest.mark.parametrize('kind', ['torchscript', 'export'])
def test_engine_segments_with_an_external_model(external, kind):
    engine = SegEngine(EngineConfig(seg_checkpoint=external[kind], sr_mode='bilinear',
                                    device='cpu', warmup=True, warmup_size=(64, 48)))
    assert engine.num_classes == NUM_CLASSES and engine.class_names == NAMES
    assert engine.colors.tolist() == COLORS and engine.ignore_index == 255
    rng = np.random.default_rng(0)
    batch = [EngineInput(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8), 4, (128, 96)),
             EngineInput(rng.integers(0, 256, (45, 61, 3), dtype=np.uint8), 2, (122, 90)),
             EngineInput(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8), 1, (40, 30))]
    for item, out in zip(batch, engine.process(batch)):
        assert out.mask.dtype == np.uint8 and out.mask.shape == item.orig_size[::-1]
        assert out.mask.max() < NUM_CLASSES
    # Scale 1 is the network alone: the mask is the argmax of its logits.
    rgb = batch[2].lr_rgb
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
    expected = reference_logits(external['net'], x).argmax(1)[0].numpy()
    assert np.array_equal(engine.segment_hr(rgb), expected)


def test_defaults_without_optional_keys(tmp_path):
    path = save_torchscript(TinySeg(), tmp_path / 'plain.pt', {'class_names': NAMES})
    seg = load_seg_model(path)
    assert seg.mean is None and seg.size_multiple == 1 and seg.ignore_index == 255
    assert seg.colors.shape == (NUM_CLASSES, 3) and len({tuple(c) for c in seg.colors}) == 4
    x = torch.rand(1, 3, 20, 30)
    with torch.no_grad():
        expected = F.interpolate(seg.module(x), size=(20, 30), mode='bilinear',
                                 align_corners=False)
        torch.testing.assert_close(seg(x), expected)


@pytest.mark.parametrize('net, match', [
    (Flat(), r'returns shape \(2, 48, 64\) for a batch of 2, not logits'),
    (Pair(), 'returns a tuple, not a logits tensor'),
    (Ids(), 'torch.int64 values, not float logits'),
    (TinySeg(num_classes=3), 'outputs 3 channels but .*bad.yaml lists 4 class_names'),
])
def test_modules_that_do_not_return_logits_fail_at_load(tmp_path, net, match):
    path = save_torchscript(net, tmp_path / 'bad.pt', _meta())
    with pytest.raises(SegModelError, match=match) as info:
        load_seg_model(path)
    assert 'bad.pt' in str(info.value)


def test_exported_program_with_wrong_classes_or_static_shapes_fails_at_load(tmp_path):
    path = save_exported(Pair(), tmp_path / 'pair.pt2', _meta())
    with pytest.raises(SegModelError, match='pair.pt2: the model returns a tuple'):
        load_seg_model(path)
    path = save_exported(TinySeg(), tmp_path / 'static.pt2', _meta(), dynamic=False)
    with pytest.raises(SegModelError, match='static.pt2: the model failed .*dynamic batch'):
        load_seg_model(path)


def test_run_time_guard_rejects_bad_output_as_engine_error(tmp_path):
    path = save_torchscript(FlatWhenLarge(), tmp_path / 'sly.pt', _meta(), script=True)
    engine = SegEngine(EngineConfig(seg_checkpoint=path, sr_mode='bilinear', device='cpu',
                                    warmup=False))
    small = np.zeros((40, 60, 3), np.uint8)
    assert engine.segment_hr(small).shape == (40, 60)
    with pytest.raises(EngineError, match=r'sly.pt: the model returns shape \(1, 64, 64\)'):
        engine.segment_hr(np.zeros((128, 128, 3), np.uint8))


def test_missing_model_or_yaml_is_a_clear_error(tmp_path):
    with pytest.raises(SegModelError, match='segmentation model not found: .*nothing.pt2'):
        load_seg_model(tmp_path / 'nothing.pt2')
    path = save_torchscript(TinySeg(), tmp_path / 'lonely.pt')
    with pytest.raises(SegModelError, match='lonely.pt needs .*lonely.yaml beside it'):
        load_seg_model(path)
    assert issubclass(SegModelError, CheckpointError)  # every caller already handles these


def test_a_train_seg_fcdensenet_checkpoint_is_refused_with_the_way_to_serve_it(tmp_path):
    dense = build_model('fcdensenet', {'num_classes': 11, 'down_layers': (1,),
                                       'bottleneck_layers': 1, 'growth': 4, 'stem': 6})
    path = save_checkpoint(tmp_path / 'dense.pt', dense, 'fcdensenet')
    with pytest.raises(SegModelError, match="'fcdensenet' network, expected 'icnet'.*TorchScript"):
        load_seg_model(path)


@pytest.mark.parametrize('meta, match', [
    (_meta(colours=COLORS), r"unknown keys \['colours'\]"),
    (_meta(class_names=None), 'class_names must be a non-empty list of strings'),
    (_meta(class_names='road car'), 'class_names must be a non-empty list'),
    (_meta(colors=COLORS[:3]), 'colors must list 4 .R, G, B. triples'),
    (_meta(colors=[[0, 0, 256]] * 4), 'colors must list 4'),
    (_meta(normalize={'mean': MEAN}), 'normalize must be none or'),
    (_meta(normalize={'mean': MEAN, 'std': [1, 0, 1]}), 'normalize.std must be > 0'),
    (_meta(normalize={'mean': [0.5, 0.5], 'std': STD}), 'normalize.mean must be 3 numbers'),
    (_meta(ignore_index=300), 'ignore_index must be an integer 0..255'),
    (_meta(size_multiple=True), 'size_multiple must be an integer'),
    (['road', 'car'], 'expected a mapping of keys, got list'),
])
def test_bad_yaml_is_a_clear_error(tmp_path, meta, match):
    path = save_torchscript(TinySeg(), tmp_path / 'net.pt', meta)
    with pytest.raises(SegModelError, match=match) as info:
        load_seg_model(path)
    assert 'net.yaml' in str(info.value)


def test_unparsable_yaml_and_normalize_none(tmp_path):
    path = save_torchscript(TinySeg(), tmp_path / 'net.pt')
    (tmp_path / 'net.yaml').write_text('class_names: [road, car\n')
    with pytest.raises(SegModelError, match='cannot read .*net.yaml'):
        load_seg_model(path)
    (tmp_path / 'net.yaml').write_text(f'class_names: {NAMES}\nnormalize: none\n')
    assert load_seg_model(path).mean is None


def _icnet(path, num_classes):
    torch.manual_seed(0)
    model = build_model('icnet', {'num_classes': num_classes, 'width': 4, 'low_blocks': 1})
    return str(save_checkpoint(path, model, 'icnet'))


def test_our_icnet_keeps_pyramid_reuse(tmp_path):
    seg = load_seg_model(_icnet(tmp_path / 'seg_icnet.pt', 11))
    assert seg.kind == 'icnet' and seg.supports_pyramid and not seg.training
    assert seg.class_names == CAMVID_NAMES[:11] and seg.ignore_index == 11
    assert np.array_equal(seg.colors, CAMVID_PALETTE[:11])
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        plain, reused = seg(x), seg(x, {4: torch.zeros(1, 3, 16, 24)})
    assert plain.shape == (1, 11, 64, 96) and not torch.allclose(plain, reused)

    engine = SegEngine(EngineConfig(seg_checkpoint=seg.path, sr_mode='bilinear', device='cpu',
                                    warmup=False))
    seen = []

    class Spy(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x, pyramid=None):
            seen.append(None if pyramid is None else sorted(pyramid))
            return self.inner(x, pyramid)
    engine.seg_model.module = Spy(engine.seg_model.module)
    engine.process([EngineInput(np.zeros((12, 16, 3), np.uint8), 4, (64, 48))])
    engine.config.pyramid_reuse = False
    engine.process([EngineInput(np.zeros((12, 16, 3), np.uint8), 4, (64, 48))])
    assert seen == [[4], None]


def test_icnet_with_other_classes_and_its_yaml(tmp_path):
    seg = load_seg_model(_icnet(tmp_path / 'city.pt', 5))
    assert seg.class_names == [f'class {i}' for i in range(5)] and seg.colors.shape == (5, 3)
    path = _icnet(tmp_path / 'named.pt', 4)
    _write_yaml(path, {'class_names': NAMES, 'colors': COLORS, 'ignore_index': 7})
    seg = load_seg_model(path)
    assert seg.class_names == NAMES and seg.colors.tolist() == COLORS and seg.ignore_index == 7
    _write_yaml(path, {'class_names': NAMES[:3]})
    with pytest.raises(SegModelError, match='named.yaml lists 3 class_names but .*4 classes'):
        load_seg_model(path)
    _write_yaml(path, _meta())
    with pytest.raises(SegModelError, match='ICNet normalises and pads its input itself'):
        load_seg_model(path)


def test_stream_tools_take_seg_model(external, tmp_path):
    import argparse
    from cloudseg_ros.tools.stream_eval import add_common_args, CloudVariant, ModelEngineFactory
    parser = argparse.ArgumentParser()
    add_common_args(parser)
    args = parser.parse_args(['--input', 'clip.mp4', '--seg-model', external['export']])
    assert args.seg_model == external['export']
    factory = ModelEngineFactory(str(tmp_path), 'cpu', seg_model=args.seg_model)
    engine = factory(CloudVariant('bilinear', pyramid_reuse=False))
    assert engine.class_names == NAMES and engine.seg_model.kind == 'export'
    # The masks depend on the YAML too (normalisation, padding): the cache key names both.
    assert 'tiny.pt2 sha256:' in factory.identity(CloudVariant('bilinear', False), 1)
    assert 'tiny.yaml sha256:' in factory.describe()['seg']
