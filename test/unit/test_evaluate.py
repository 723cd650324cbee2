"""`cloudseg eval` on hand-checkable cases and end to end on a tiny labeled folder."""
import json
import os

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cloudseg_ros.inference.model_files import write_tiny_models
from cloudseg_ros.nets.checkpoint import build_model, save_checkpoint
from cloudseg_ros.training import evaluate
from cloudseg_ros.training.datasets import SegSplit

CLASSES = [f'c{i}' for i in range(11)]


def _split(n=2, h=32, w=48):
    """Top half white = class 0, bottom half black = class 1, first column void."""
    images = np.zeros((n, h, w, 3), np.uint8)
    images[:, :h // 2] = 255
    labels = np.ones((n, h, w), np.uint8)
    labels[:, :h // 2] = 0
    labels[:, :, 0] = 11
    return SegSplit(images, labels, CLASSES, 11, [f'f{i}' for i in range(n)])


def _logits(ids: torch.Tensor) -> torch.Tensor:
    return F.one_hot(ids, 11).permute(0, 3, 1, 2).float()


def constant_seg(x, pyramid=None):
    """Predicts class 0 everywhere, whatever the input."""
    return _logits(torch.zeros(x.shape[0], *x.shape[-2:], dtype=torch.long))


def threshold_seg(x, pyramid=None):
    """Class 0 where the frame is bright, class 1 where dark: exact on the synthetic frames."""
    return _logits((x.mean(1) < 0.5).long())


def bilinear_sr(scale):
    return lambda lr: F.interpolate(lr, scale_factor=scale, mode='bilinear', align_corners=False)


def test_constant_prediction_gives_hand_computed_miou():
    # Class 0: TP = top half, FP = bottom half, so IoU 0.5; class 1: never predicted, IoU 0;
    # classes 2..10 absent from both: NaN, left out. mIoU = (0.5 + 0) / 2.
    result = evaluate.evaluate_split(_split(), 2, constant_seg, {'sr_base': bilinear_sr(2)},
                                     torch.device('cpu'))
    methods = result['methods']
    assert list(methods) == ['hr', 'bilinear', 'bicubic', 'sr_base', 'sr_base_nopyr']
    for m in methods.values():
        assert m['miou'] == pytest.approx(0.25)
        assert m['agreement_miou'] == pytest.approx(1.0)
        assert m['per_class_iou']['c0'] == pytest.approx(0.5)
        assert m['per_class_iou']['c1'] == 0.0 and m['per_class_iou']['c5'] is None
    assert methods['hr']['psnr'] is None and methods['hr']['ssim'] == pytest.approx(1.0)
    assert methods['bilinear']['psnr'] > 10
    json.dumps(result, allow_nan=False)  # JSON-safe: no NaN / inf


def test_exact_prediction_and_agreement():
    split = _split()
    result = evaluate.evaluate_split(split, 2, threshold_seg, {}, torch.device('cpu'))
    assert result['scale'] == 2
    assert result['methods']['hr']['miou'] == pytest.approx(1.0)
    # The edge lies on the LR pixel grid, so bilinear upsampling keeps every pixel's side.
    assert result['methods']['bilinear']['miou'] == pytest.approx(1.0)

    def darker(x, pyramid=None):  # sees every pixel as dark
        return threshold_seg(x * 0.4)
    result = evaluate.evaluate_split(split, 2, darker, {}, torch.device('cpu'))
    assert result['methods']['hr']['agreement_miou'] == pytest.approx(1.0)
    # Everything predicted class 1: IoU(c1) = bottom / (all non-void) = 0.5, IoU(c0) = 0.
    assert result['methods']['hr']['miou'] == pytest.approx(0.25)


def test_pyramid_entry_reaches_the_seg_net():
    seen = []

    def recording_seg(x, pyramid=None):
        seen.append(None if pyramid is None else {k: tuple(v.shape) for k, v in
                                                  pyramid.items()})
        return constant_seg(x)
    evaluate.evaluate_split(_split(1), 4, recording_seg, {'sr_aware': bilinear_sr(4)},
                            torch.device('cpu'))
    assert {4: (1, 3, 8, 12)} in seen and seen.count(None) == 4  # hr, bilinear, bicubic, nopyr


def _write_camvid(root, n=2, h=48, w=64):
    for sub in ('images', 'labels'):
        os.makedirs(os.path.join(root, 'val', sub), exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(os.path.join(root, 'val', 'images', f'f{i}.png'),
                    rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        cv2.imwrite(os.path.join(root, 'val', 'labels', f'f{i}.png'),
                    rng.integers(0, 12, (h, w), dtype=np.uint8))
    with open(os.path.join(root, 'classes.txt'), 'w') as f:
        f.writelines(f'{i} {name} 0 0 0\n' for i, name in enumerate(CLASSES + ['void']))


def test_cli_end_to_end_skips_missing_aware_weights(tmp_path, capsys):
    data, models = str(tmp_path / 'data'), tmp_path / 'models'
    _write_camvid(data)
    write_tiny_models(str(models), scales=(2,), variants=('base',))  # no aware weights
    out = tmp_path / 'out'
    rc = evaluate.main(['--data', data, '--split', 'val', '--scale', '2', '--json',
                        str(out / 'r.json'), '--models', str(models), '--device', 'cpu',
                        '--md', str(out / 'r.md'), '--plot', str(out / 'r.png')])
    assert rc == 0
    assert 'skipping sr_aware' in capsys.readouterr().out
    result = json.loads((out / 'r.json').read_text())
    assert set(result) == {'scale', 'methods'} and result['scale'] == 2
    assert set(result['methods']) == {'hr', 'bilinear', 'bicubic', 'sr_base', 'sr_base_nopyr'}
    entry = result['methods']['sr_base']
    assert set(entry) == {'miou', 'psnr', 'ssim', 'agreement_miou', 'per_class_iou'}
    assert set(entry['per_class_iou']) == set(CLASSES)
    # A fresh CARN is exactly bilinear upsampling (zero-initialised residual).
    assert entry['psnr'] == pytest.approx(result['methods']['bilinear']['psnr'], abs=0.2)
    assert '| sr_base |' in (out / 'r.md').read_text()
    assert (out / 'r.png').read_bytes()[:4] == b'\x89PNG'


def test_cli_scores_only_the_drives_asked_for(tmp_path, capsys):
    """A net trained with one drive held out is scored on that drive alone."""
    data, models = str(tmp_path / 'data'), tmp_path / 'models'
    _write_camvid(data, n=3)
    with open(os.path.join(data, 'frames.csv'), 'w') as f:
        f.write('split,stem,sequence\nval,f0,driveA\nval,f1,driveB\nval,f2,driveB\n')
    write_tiny_models(str(models), scales=(2,), variants=('base',))
    args = ['--data', data, '--split', 'val', '--scale', '2', '--json', str(tmp_path / 'r.json'),
            '--models', str(models), '--device', 'cpu']
    assert evaluate.main(args + ['--sequences', 'driveB']) == 0
    out = capsys.readouterr().out
    assert 'eval: 2 frames of val' in out and 'val (driveB), x2, 2 frames' in out
    assert evaluate.main(args + ['--sequences', 'driveB', '--max-frames', '1']) == 0
    assert 'eval: 1 frames of val' in capsys.readouterr().out
    assert evaluate.main(args + ['--sequences', 'driveC']) == 2
    assert "sequences ['driveC'] not in" in capsys.readouterr().err
    assert evaluate.main(args + ['--max-frames', '-1']) == 2
    assert '--max-frames >= 0' in capsys.readouterr().err


def test_cli_missing_seg_weights_is_a_clear_error(tmp_path, capsys):
    _write_camvid(str(tmp_path / 'data'))
    rc = evaluate.main(['--data', str(tmp_path / 'data'), '--split', 'val', '--scale', '4',
                        '--json', str(tmp_path / 'r.json'), '--models', str(tmp_path)])
    assert rc == 2 and 'seg_icnet.pt' in capsys.readouterr().err


def test_no_pyramid_pass_for_models_without_one():
    seen = []

    def recording_seg(x, pyramid=None):
        seen.append(pyramid)
        return constant_seg(x)
    result = evaluate.evaluate_split(_split(1), 4, recording_seg, {'sr_aware': bilinear_sr(4)},
                                     torch.device('cpu'), pyramid_reuse=False)
    assert list(result['methods']) == ['hr', 'bilinear', 'bicubic', 'sr_aware']
    assert seen == [None] * 4


def test_cli_with_an_external_seg_model(tmp_path, capsys):
    data = str(tmp_path / 'data')
    _write_camvid(data)
    torch.manual_seed(0)
    net = torch.jit.trace(torch.nn.Conv2d(3, 11, 3, padding=1).eval(), torch.rand(1, 3, 8, 8))
    torch.jit.save(net, str(tmp_path / 'mine.pt'))
    (tmp_path / 'mine.yaml').write_text(f'class_names: {CLASSES}\n')
    args = ['--data', data, '--split', 'val', '--scale', '2', '--json', str(tmp_path / 'r.json'),
            '--models', str(tmp_path / 'no_models'), '--device', 'cpu',
            '--seg-model', str(tmp_path / 'mine.pt')]
    assert evaluate.main(args) == 0
    result = json.loads((tmp_path / 'r.json').read_text())
    assert list(result['methods']) == ['hr', 'bilinear', 'bicubic']  # no SR weights there
    assert result['methods']['hr']['agreement_miou'] == pytest.approx(1.0)

    (tmp_path / 'mine.yaml').write_text(f'class_names: {CLASSES[:5]}\n')
    capsys.readouterr()
    assert evaluate.main(args) == 2
    assert 'mine.pt: the model outputs 11 channels but' in capsys.readouterr().err

    net = torch.jit.trace(torch.nn.Conv2d(3, 5, 1).eval(), torch.rand(1, 3, 8, 8))
    torch.jit.save(net, str(tmp_path / 'mine.pt'))  # consistent with its YAML, not with CamVid
    assert evaluate.main(args) == 2
    assert 'mine.pt predicts 5 classes but' in capsys.readouterr().err


def test_every_nth_keeps_frames_labels_and_stems_together():
    every_nth = evaluate.every_nth
    split = SegSplit(images=np.arange(5)[:, None, None, None] * np.ones((5, 2, 2, 3), np.uint8),
                     labels=np.arange(5)[:, None, None] * np.ones((5, 2, 2), np.uint8),
                     class_names=['a'], ignore_index=1, stems=list('vwxyz'))
    sub = every_nth(split, 2)
    assert sub.stems == ['v', 'x', 'z']
    assert [int(i[0, 0, 0]) for i in sub.images] == [0, 2, 4]
    assert [int(lab[0, 0]) for lab in sub.labels] == [0, 2, 4]
    assert every_nth(split, 1) is split


def test_sr_rows_use_the_sr_segmentation_net_and_hr_stays_the_reference():
    sr_fns = {'sr_base': bilinear_sr(2), 'sr_aware': bilinear_sr(2)}
    result = evaluate.evaluate_split(_split(), 2, threshold_seg, sr_fns, torch.device('cpu'),
                                     sr_seg_fn=constant_seg)
    methods = result['methods']
    for name in ('hr', 'bilinear', 'bicubic', 'sr_base', 'sr_base_nopyr'):  # not adapted to
        assert methods[name]['miou'] == pytest.approx(1.0)
    for name in ('sr_aware', 'sr_aware_nopyr'):  # constant class 0 against the exact HR mask
        assert methods[name]['miou'] == pytest.approx(0.25)
        assert methods[name]['agreement_miou'] == pytest.approx(0.25)


def test_cli_segments_sr_rows_with_the_folders_adapted_net(tmp_path, capsys):
    data, models = str(tmp_path / 'data'), tmp_path / 'models'
    _write_camvid(data)
    write_tiny_models(str(models), scales=(2,), variants=('aware',))
    args = ['--data', data, '--split', 'val', '--scale', '2', '--json',
            str(tmp_path / 'r.json'), '--models', str(models), '--device', 'cpu']
    (models / 'seg_icnet_x2.pt').write_bytes((models / 'seg_icnet.pt').read_bytes())
    assert evaluate.main(args) == 0
    assert 'sr_aware rows segmented with' in capsys.readouterr().out
    five_classes = build_model('icnet', {'num_classes': 5, 'width': 4})
    save_checkpoint(models / 'seg_icnet_x2.pt', five_classes, 'icnet')
    assert evaluate.main(args) == 2
    assert 'cannot mix them' in capsys.readouterr().err
