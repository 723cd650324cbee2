"""Streaming evaluation (tools/stream_eval), `cloudseg profile` and `cloudseg bench-stream`.

Most tests use a stub engine whose mask is a function of the image content, so accuracy can be
worked out by hand; the command tests run tiny random-init networks on the CPU.
"""
import json
import shutil
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from cloudseg_ros.core.codecs import encode_jpeg
from cloudseg_ros.core.imageops import downsample
from cloudseg_ros.core.profile import StreamConfig, load_profile
from cloudseg_ros.tools import bench_stream, profile
from cloudseg_ros.tools.stream_eval import Clip, CloudVariant, StreamEvaluator, load_clip

FPS = 15.0
BAND = 20  # stub class = mean grey level // BAND


class StubEngine:
    """SegEngine's interface; the mask is the class of each pixel's upsampled grey level."""

    num_classes = 11

    def __init__(self) -> None:
        self.frames = 0

    def supported_scales(self):
        return [1, 2, 3, 4]

    def process(self, batch):
        self.frames += len(batch)
        return [SimpleNamespace(mask=self._mask(item.lr_rgb, item.orig_size), timings_ms={})
                for item in batch]

    def segment_hr(self, rgb):
        return self._mask(rgb, (rgb.shape[1], rgb.shape[0]))

    @staticmethod
    def _mask(rgb, size):
        grey = cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR).mean(axis=2)
        return np.minimum(grey // BAND, 10).astype(np.uint8)


def _flat_clip(count=6, labels=None):
    """Frame i is uniformly grey at the middle of class i's band: the stub says class i."""
    frames = [np.full((64, 96, 3), BAND * i + BAND // 2, np.uint8) for i in range(count)]
    return Clip(frames, FPS, 'flat', labels)


def _moving_clip(count=8):
    """A smooth pattern drifting a few pixels per frame."""
    yy, xx = np.mgrid[0:64, 0:96].astype(np.float32)
    frames = []
    for t in range(count):
        grey = 110 + 100 * np.sin((xx + 3 * t) / 9.0) * np.cos(yy / 11.0)
        frames.append(np.repeat(grey[..., None], 3, axis=2).astype(np.uint8))
    return Clip(frames, FPS, 'moving')


def _evaluator(clip, engine=None):
    engine = engine or StubEngine()
    return StreamEvaluator(clip, lambda variant: engine, log=lambda text: None), engine


def _config(scale=1, quality=95, rate=FPS, useful=0.0, key=0.2, codec='jpeg'):
    return StreamConfig(scale, codec, quality, rate, useful, key)


def test_selector_off_sends_every_frame_and_shows_its_own_mask():
    evaluator, _ = _evaluator(_moving_clip())
    result = evaluator.run(_config(scale=2), CloudVariant())
    assert result.frames == result.frames_sent == 8
    assert result.mask_source == list(range(8))


def test_high_useful_threshold_sends_less_and_skipped_frames_keep_the_last_mask():
    evaluator, _ = _evaluator(_moving_clip())
    every = evaluator.run(_config(scale=2), CloudVariant())
    lazy = evaluator.run(_config(scale=2, useful=0.9, key=1.0), CloudVariant())
    # Only the first frame (a KEY) passes; 8 frames are 0.53 s, under max_interval_s.
    assert lazy.frames_sent == 1 and lazy.bytes_total < every.bytes_total
    assert lazy.mask_source == [0] * 8
    assert lazy.accuracy < every.accuracy


def test_kbps_and_accuracy_by_hand_at_half_rate():
    labels = [np.full((64, 96), i, np.uint8) for i in range(6)]
    for label in labels:
        label[:, :10] = 11  # void: ignored by the labeled mIoU
    evaluator, _ = _evaluator(_flat_clip(labels=labels))
    result = evaluator.run(_config(scale=2, quality=90, rate=FPS / 2), CloudVariant())
    assert result.mask_source == [0, 0, 2, 2, 4, 4]
    sent = [encode_jpeg(downsample(evaluator.clip.frames[i], 2), 90) for i in (0, 2, 4)]
    assert result.bytes_total == sum(len(data) for data in sent)
    assert result.kbps == pytest.approx(result.bytes_total * 8 / (6 / FPS) / 1000)
    # Shown classes 0 0 2 2 4 4 vs true 0..5: IoU 1/2 for 0, 2, 4 and 0 for 1, 3, 5.
    assert result.accuracy == pytest.approx(0.25)
    assert result.labeled_miou == pytest.approx(0.25)


def test_full_resolution_through_jpeg_q95_agrees_with_itself():
    evaluator, _ = _evaluator(_moving_clip())
    result = evaluator.run(_config(scale=1, quality=95), CloudVariant())
    assert 0.9 < result.accuracy <= 1.0


@pytest.mark.parametrize('scale', [1, 3])
def test_h264_stream_is_one_idr_then_p_frames_decoded_in_order(scale):
    evaluator, _ = _evaluator(_moving_clip())
    h264 = evaluator.run(_config(scale, 12, codec='h264', key=1.0), CloudVariant())
    # Every frame sent and decoded; only the first is an IDR, the rest are P-frames that
    # decode only against the frames before them (so the order must be the clip's).
    assert h264.frames_sent == 8 and h264.rejected == 0 and h264.keyframes == 1
    assert h264.mask_source == list(range(8))
    jpeg = evaluator.run(_config(scale, 90, key=1.0), CloudVariant())
    assert jpeg.keyframes == jpeg.frames_sent == 8
    # Decoded P-frames carry the picture: at CRF 12 masks as good as JPEG q90's intra frames.
    assert h264.accuracy == pytest.approx(jpeg.accuracy, abs=0.03)


def test_h264_frames_the_rate_cap_skips_are_never_encoded():
    evaluator, _ = _evaluator(_moving_clip())
    half = evaluator.run(_config(2, 23, rate=FPS / 2, codec='h264', key=1.0), CloudVariant())
    # Frames 1, 3, 5, 7 are not encoded: 2, 4, 6 are P-frames predicted from the frame sent
    # two frames earlier, and still decode.
    assert half.frames_sent == 4 and half.rejected == 0 and half.keyframes == 1
    assert half.mask_source == [0, 0, 2, 2, 4, 4, 6, 6]


def test_the_robots_x264_preset_applies_to_every_h264_point():
    clip = _moving_clip()
    sizes = {}
    for preset in ('ultrafast', 'veryfast'):
        evaluator = StreamEvaluator(clip, lambda variant: StubEngine(), log=lambda text: None,
                                    h264_preset=preset)
        sizes[preset] = evaluator.run(_config(1, 28, codec='h264'), CloudVariant()).bytes_total
    assert sizes['veryfast'] < sizes['ultrafast'], sizes
    with pytest.raises(ValueError, match='x264 preset'):
        StreamEvaluator(clip, lambda variant: StubEngine(), h264_preset='slow')


def test_rate_and_threshold_variants_reuse_the_all_frames_masks():
    evaluator, engine = _evaluator(_moving_clip())
    jobs = [(_config(scale=2, rate=FPS / 2), CloudVariant()),
            (_config(scale=2), CloudVariant()),
            (_config(scale=2, useful=0.9, key=1.0), CloudVariant())]
    results = evaluator.run_many(jobs)
    assert engine.frames == 8 + 8  # the reference, then each distinct decoded frame once
    assert [r.config for r in results] == [job[0] for job in jobs]
    assert results[1].engine_frames + results[0].engine_frames == 8
    assert results[2].engine_frames == 0


class StubFactory:
    """An engine factory with the identity a disk cache needs."""

    def __init__(self):
        self.engine = StubEngine()

    def __call__(self, variant):
        return self.engine

    def identity(self, variant, scale):
        return 'stub' if scale == 1 else f'stub|{variant.name}'


def test_disk_cache_serves_a_second_run_without_inference(tmp_path):
    jobs = [(_config(scale=2), CloudVariant()), (_config(scale=1), CloudVariant())]
    first = StreamEvaluator(_moving_clip(), StubFactory(), cache_dir=str(tmp_path),
                            log=lambda text: None)
    expected = first.run_many(jobs)
    again = StreamEvaluator(_moving_clip(), StubFactory(), cache_dir=str(tmp_path),
                            log=lambda text: None)
    results = again.run_many(jobs)
    assert first.engine_factory.engine.frames == 8 * 3  # reference + two configurations
    assert again.engine_factory.engine.frames == 0
    assert [r.accuracy for r in results] == [r.accuracy for r in expected]
    other = StreamEvaluator(_moving_clip(), StubFactory(), cache_dir=str(tmp_path),
                            log=lambda text: None)
    other.run(_config(scale=2), CloudVariant('base'))  # another SR variant: not served
    assert other.engine_factory.engine.frames == 8


def _flat_split(root, frames):
    """A CamVid-like split of flat 12x8 frames: frame i has value 40 i, label i."""
    split = root / 'val'
    (split / 'images').mkdir(parents=True)
    (split / 'labels').mkdir()
    for i in range(frames):
        cv2.imwrite(str(split / 'images' / f'f{i}.png'), np.full((8, 12, 3), 40 * i, np.uint8))
        cv2.imwrite(str(split / 'labels' / f'f{i}.png'), np.full((8, 12), i, np.uint8))
    return split


def test_load_clip_pairs_camvid_labels_by_stem(tmp_path):
    split = _flat_split(tmp_path, 3)
    clip = load_clip(str(split), max_frames=2)
    assert len(clip.frames) == 2 and clip.fps == FPS
    assert [int(label[0, 0]) for label in clip.labels] == [0, 1]
    (split / 'labels' / 'f1.png').unlink()
    with pytest.raises(ValueError, match='missing'):
        load_clip(str(split))


def test_load_clip_skips_leading_frames_and_pairs_labels_after_them(tmp_path):
    split = _flat_split(tmp_path, 4)
    clip = load_clip(str(split), max_frames=1, skip_frames=2)
    assert [int(frame[0, 0, 0]) for frame in clip.frames] == [80]
    assert [int(label[0, 0]) for label in clip.labels] == [2]
    assert [int(label[0, 0]) for label in load_clip(str(split), skip_frames=1).labels] == [
        1, 2, 3]
    with pytest.raises(ValueError, match='no frames after skipping 4'):
        load_clip(str(split), skip_frames=4)
    with pytest.raises(ValueError, match='skip_frames must be >= 0'):
        load_clip(str(split), skip_frames=-1)


def test_skip_frames_must_not_be_negative(capsys):
    assert bench_stream.parse_args(['--input', 'x', '--json', 'y', '--skip-frames', '140']
                                   ).skip_frames == 140
    with pytest.raises(SystemExit):
        bench_stream.parse_args(['--input', 'x', '--json', 'y', '--skip-frames', '-1'])
    assert 'must be >= 0' in capsys.readouterr().err


@pytest.mark.parametrize('tool, args, said', [
    ('bench-stream', ['--input', '/no/such/clip', '--json', 'x.json'], "'/no/such/clip' does not"),
    ('profile', ['--input', '/no/such/clip', '--out', 'p.yaml'], "'/no/such/clip' does not"),
    ('bench-stream', ['--models', '/no/such/models', '--json', 'x.json', '--codecs', 'jpeg',
                      '--qualities', '50', '--sr-scales', '2', '--downsample-scales', '2'],
     'segmentation model not found: /no/such/models/seg_icnet.pt'),
])
def test_bad_input_is_one_line_and_exit_code_2_not_a_traceback(
        tool, args, said, camvid_like, tmp_path, capsys, monkeypatch):
    from cloudseg_ros import cli
    monkeypatch.chdir(tmp_path)
    if '--input' not in args:
        args = ['--input', camvid_like] + args
    assert cli.main([tool, '--device', 'cpu'] + args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f'cloudseg {tool}: ') and said in err and 'Traceback' not in err


def test_kbps_at_accuracy_interpolates_along_the_upper_envelope():
    curve = [(100.0, 0.90), (150.0, 0.85), (200.0, 0.96), (250.0, 0.95), (400.0, 0.99)]
    # Envelope: (100, .90) (200, .96) (400, .99); 0.97 lies a third of the way to 400.
    assert bench_stream.kbps_at_accuracy(curve, 0.97) == pytest.approx(200 + 200 / 3)
    assert bench_stream.kbps_at_accuracy(curve, 0.80) == pytest.approx(100.0)
    assert bench_stream.kbps_at_accuracy(curve, 0.995) is None
    curves = {'full': [{'kbps': 1000.0, 'miou': 1.0, 'labeled_miou': 0.60}],
              'downsample': [{'kbps': 300.0, 'miou': 0.98, 'labeled_miou': 0.59}],
              'cloudseg': [{'kbps': 100.0, 'miou': 0.97, 'labeled_miou': 0.50}],
              'cloudseg_selector': []}
    summary = bench_stream.summarise(curves, 0.97, reference_labeled=0.60)
    assert summary['ratios'] == {'full/cloudseg': 10.0, 'downsample/cloudseg': 3.0,
                                 'full/cloudseg_selector': None}
    assert summary['targets_met'] == {'full/cloudseg': True, 'downsample/cloudseg': True}
    # Labeled view: cloudseg (0.50) misses 0.97 x 0.60 = 0.582, so its ratios are unmeasurable.
    assert summary['labeled']['kbps_at_target'] == {'full': 1000.0, 'downsample': 300.0,
                                                    'cloudseg': None, 'cloudseg_selector': None}
    assert summary['labeled']['targets_met']['full/cloudseg'] is None
    assert summary['other_agreement_targets']['0.85']['ratios']['full/cloudseg'] == 10.0
    # The paper's criterion (labeled, >= 0.97 x 0.60) and agreement >= 0.90, spelled out.
    paper = summary['paper_criterion']
    assert paper['metric'] == 'labeled_miou' and paper['target'] == pytest.approx(0.582)
    assert paper['kbps'] == {'full': 1000.0, 'downsample': 300.0, 'cloudseg': None}
    assert paper['ratios'] == {'full/cloudseg': None, 'downsample/cloudseg': None}
    agreement = summary['agreement_criterion']
    assert (agreement['metric'], agreement['target']) == ('miou', 0.90)
    assert agreement['kbps'] == {'full': 1000.0, 'cloudseg': 100.0}
    assert agreement['ratios'] == {'full/cloudseg': 10.0}
    assert bench_stream.summarise(curves, 0.97)['paper_criterion'] is None  # no labels


def _points(codec, pairs):
    return [{'kbps': kbps, 'miou': miou, 'codec': codec} for kbps, miou in pairs]


def test_a_curve_needs_the_kbps_of_its_cheaper_codec_at_each_accuracy():
    # At 0.80 JPEG is cheaper (100 vs 150 kbps); at 0.95 H.264 is (250 vs 500).
    full = (_points('jpeg', [(100.0, 0.80), (500.0, 0.95)])
            + _points('h264', [(150.0, 0.80), (250.0, 0.95)]))
    curves = {'full': full, 'downsample': [], 'cloudseg': _points('h264', [(50.0, 0.95)]),
              'cloudseg_selector': []}
    summary = bench_stream.summarise(curves, 0.95, other_targets=(0.80,), agreement_level=0.80)
    assert summary['kbps_at_target']['full'] == 250.0
    assert summary['kbps_by_codec']['full'] == {'jpeg': 500.0, 'h264': 250.0}
    assert summary['ratios']['full/cloudseg'] == 5.0
    low = summary['other_agreement_targets']['0.8']
    assert low['kbps_at_target']['full'] == 100.0
    assert low['kbps_by_codec']['full'] == {'jpeg': 100.0, 'h264': 150.0}
    assert summary['agreement_criterion']['kbps'] == {'full': 100.0, 'cloudseg': 50.0}
    assert summary['agreement_criterion']['ratios'] == {'full/cloudseg': 2.0}


def test_bench_stream_streams_both_codecs_and_the_cheaper_one_is_the_baseline():
    evaluator, _ = _evaluator(_flat_clip())
    args = bench_stream.parse_args([
        '--input', 'unused', '--json', 'unused', '--full-qualities', '50', '90',
        '--full-crfs', '18', '28', '--qualities', '50', '--crfs', '28',
        '--downsample-scales', '2', '--sr-scales', '2', '3', '--selector-thresholds', '0.05'])
    curves, results = bench_stream.run_curves(evaluator, args)
    for name, points in curves.items():
        assert {p['codec'] for p in points} == {'jpeg', 'h264'}, name
        assert all(p['kbps'] > 0 and p['codec'] == p['config']['codec'] for p in points)
        assert all(r.rejected == 0 for r in results[name])
    assert {p['config']['scale'] for p in curves['cloudseg']} == {2, 3}
    # Uniform frames: every point keeps every mask right, but JPEG pays its headers and tables
    # on every frame while an H.264 P-frame of a flat picture costs a few bytes.
    full = curves['full']
    assert all(p['miou'] == pytest.approx(1.0) for p in full)
    cheapest = {codec: min(p['kbps'] for p in full if p['codec'] == codec)
                for codec in ('jpeg', 'h264')}
    assert cheapest['h264'] < cheapest['jpeg']
    summary = bench_stream.summarise(curves, 0.97)
    assert summary['kbps_at_target']['full'] == cheapest['h264']
    assert summary['kbps_by_codec']['full'] == cheapest


def test_codec_values_are_checked_when_parsing(capsys):
    with pytest.raises(SystemExit):
        bench_stream.parse_args(['--input', 'x', '--json', 'y', '--crfs', '60'])
    assert 'crf must be 0..51' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        profile.parse_args(['--input', 'x', '--codecs', 'jpeg', '--qualities', '0'])
    # CRFs are only checked when H.264 is measured.
    assert profile.parse_args(['--input', 'x', '--codecs', 'jpeg', '--crfs', '99']
                              ).codec_settings == {'jpeg': [30, 50, 70, 90]}


def test_selector_settings_are_checked_before_anything_streams(capsys):
    """A useful threshold above the key threshold used to stop a run after minutes of points."""
    with pytest.raises(SystemExit):
        bench_stream.parse_args(['--input', 'x', '--json', 'y',
                                 '--selector-thresholds', '0.1', '0.3'])
    assert 'useful 0.3, key 0.2' in capsys.readouterr().err
    assert bench_stream.parse_args(['--input', 'x', '--json', 'y', '--selector-thresholds',
                                    '0.3', '--key-threshold', '0.5']).key_threshold == 0.5
    with pytest.raises(SystemExit):
        profile.parse_args(['--input', 'x', '--rates', '15', '0'])
    assert 'max_rate_hz must be > 0' in capsys.readouterr().err


@pytest.fixture(scope='module')
def tiny_models_x3(tiny_models, tmp_path_factory):
    """The tiny_models weights (test/conftest.py) plus an aware CARN-M x3."""
    from cloudseg_ros.inference.model_files import write_tiny_models
    folder = tmp_path_factory.mktemp('models_x3') / 'models'
    shutil.copytree(tiny_models, folder)
    return write_tiny_models(str(folder), scales=(3,))


@pytest.fixture(scope='module')
def camvid_like(tmp_path_factory):
    """A 4-frame labeled split of moving 96x64 frames."""
    split = tmp_path_factory.mktemp('split')
    (split / 'images').mkdir()
    (split / 'labels').mkdir()
    for i, frame in enumerate(_moving_clip(4).frames):
        cv2.imwrite(str(split / 'images' / f'f{i:02d}.png'), frame)
        cv2.imwrite(str(split / 'labels' / f'f{i:02d}.png'), (frame[..., 0] // 24).astype(
            np.uint8))
    return str(split)


def test_profile_writes_a_loadable_profile_and_plot(tmp_path, tiny_models, camvid_like,
                                                    capsys):
    out, plot = tmp_path / 'profile.yaml', tmp_path / 'profile.png'
    assert profile.main(['--input', camvid_like, '--out', str(out), '--plot', str(plot),
                         '--scales', '1', '2', '3', '--codecs', 'jpeg', '--qualities', '50',
                         '90', '--rates', '15', '7.5', '--thresholds', '0', '--device', 'cpu',
                         '--models', tiny_models]) == 0
    assert 'no aware SR weights for scale(s) [3]: left out' in capsys.readouterr().out
    loaded = load_profile(str(out))
    assert len(loaded.entries) == 8  # x3 has no weights and is left out
    assert {e.config.scale for e in loaded.entries} == {1, 2}
    assert loaded.front and all(e.labeled_miou is not None for e in loaded.entries)
    assert loaded.meta['frames'] == 4 and loaded.meta['fps'] == FPS
    assert 'seg_icnet.pt sha256:' in loaded.meta['models']['seg']
    assert plot.stat().st_size > 0


def test_profile_serves_x3_and_h264_with_x3_weights(tmp_path, tiny_models_x3, camvid_like):
    out = tmp_path / 'profile.yaml'
    assert profile.main(['--input', camvid_like, '--out', str(out), '--scales', '1', '2', '3',
                         '4', '--codecs', 'jpeg', 'h264', '--qualities', '70', '--crfs', '28',
                         '--rates', '15', '--thresholds', '0', '--device', 'cpu',
                         '--models', tiny_models_x3]) == 0
    loaded = load_profile(str(out))
    assert sorted((e.config.scale, e.config.codec) for e in loaded.entries) == [
        (s, c) for s in (1, 2, 3, 4) for c in ('h264', 'jpeg')]
    assert all(e.kbps > 0 for e in loaded.entries)
    assert 'sr_carnm_x3_aware.pt sha256:' in loaded.meta['models']['aware+reuse']['x3']


def test_bench_stream_json_has_the_exact_keys(tmp_path, tiny_models_x3, camvid_like):
    out = tmp_path / 'bench.json'
    assert bench_stream.main(['--input', camvid_like, '--json', str(out), '--qualities', '50',
                              '90', '--crfs', '28', '--full-qualities', '90', '--full-crfs',
                              '28', '--downsample-scales', '2', '--selector-thresholds', '0.05',
                              '--max-frames', '3', '--skip-frames', '1', '--device', 'cpu',
                              '--h264-preset', 'superfast', '--models', tiny_models_x3]) == 0
    document = json.loads(out.read_text())
    assert document['meta']['h264_preset'] == 'superfast'
    assert (document['meta']['skip_frames'], document['meta']['frames']) == (1, 3)
    assert set(document['curves']) == {'full', 'downsample', 'cloudseg', 'cloudseg_selector'}
    # Scales 2, 3 and 4 (x3 has weights here) x JPEG q50, q90 and H.264 CRF 28.
    assert sorted((p['config']['scale'], p['codec']) for p in document['curves']['cloudseg']
                  ) == [(s, c) for s in (2, 3, 4) for c in ('h264', 'jpeg', 'jpeg')]
    for points in document['curves'].values():
        for entry in points:
            assert set(entry) == {'kbps', 'miou', 'codec', 'config', 'labeled_miou'}
            assert 0.0 <= entry['miou'] <= 1.0 and entry['kbps'] > 0
    assert [p['codec'] for p in document['curves']['full']] == ['jpeg', 'h264']
    assert set(document['summary']['kbps_at_target']) == set(document['curves'])
    assert 'labeled' in document['summary']
    assert set(document['summary']['ratios']) == {'full/cloudseg', 'downsample/cloudseg',
                                                  'full/cloudseg_selector'}
    paper = document['summary']['paper_criterion']
    assert set(paper['kbps']) == {'full', 'downsample', 'cloudseg'}
    assert set(paper['ratios']) == {'full/cloudseg', 'downsample/cloudseg'}
    assert set(document['summary']['agreement_criterion']['kbps']) == {'full', 'cloudseg'}


def test_engine_factory_serves_a_per_scale_segmentation_net(tiny_models, tmp_path):
    """`cloudseg adapt`'s seg_icnet_x2.pt serves SR'd x2 frames; its hash keys the masks."""
    from cloudseg_ros.inference.model_files import seg_scale_file, SEG_FILE
    from cloudseg_ros.tools.stream_eval import CloudVariant, ModelEngineFactory
    folder = tmp_path / 'models'
    shutil.copytree(tiny_models, folder)
    shutil.copy(folder / SEG_FILE, folder / seg_scale_file(2))
    factory = ModelEngineFactory(str(folder), device='cpu')
    aware, bilinear = CloudVariant('aware', True), CloudVariant('bilinear', False)
    assert sorted(factory(aware).seg_scale_models) == [2]
    assert factory(bilinear).seg_scale_models == {}  # tuned to the folder's SR, not bilinear
    assert factory(CloudVariant('base', True)).seg_scale_models == {}  # nor to base CARN-M
    assert seg_scale_file(2) in factory.identity(aware, 2)
    assert seg_scale_file(2) not in factory.identity(aware, 4)
    assert seg_scale_file(2) not in factory.identity(aware, 1)
    assert factory.describe()['seg_per_scale']['x2'].startswith(seg_scale_file(2))
    named = ModelEngineFactory(str(folder), device='cpu', seg_model=str(folder / SEG_FILE))
    assert named(aware).seg_scale_models == {}  # an explicit net: the folder's are not its
