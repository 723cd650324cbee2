"""RandConv and MixStyle (training/style_aug.py): alignment of views, ranges, train-only hooks."""
import pytest
import torch
from torch import nn

from cloudseg_ros.nets.icnet import ICNet, ICNetConfig
from cloudseg_ros.training.style_aug import (MixStyle, mixstyle_layers, paired_partners,
                                             random_convolution)


def _views(b=4, k=2, h=24, w=32):
    torch.manual_seed(0)
    one = torch.rand(b, 1, 3, h, w)
    return one.repeat(1, k, 1, 1, 1)


def test_random_convolution_shares_the_kernel_across_views_and_stays_in_range():
    views = _views()
    out = random_convolution(views, prob=1.0)
    assert out.shape == views.shape
    assert torch.equal(out[:, 0], out[:, 1])  # identical views stay identical
    assert not torch.allclose(out, views)
    assert out.min() >= 0 and out.max() <= 1


def test_random_convolution_probability_zero_is_identity():
    views = _views()
    assert torch.equal(random_convolution(views, prob=0.0), views)


def test_random_convolution_keeps_channel_statistics_roughly():
    views = _views(b=8, h=64, w=64)
    out = random_convolution(views, prob=1.0)
    # rescaled to the image's own mean: a random filter does not turn frames black or white
    assert torch.allclose(out.mean((-2, -1)), views.mean((-2, -1)), atol=0.1)


def test_random_convolution_rejects_other_shapes():
    with pytest.raises(ValueError, match='B, K, 3, H, W'):
        random_convolution(torch.rand(2, 3, 8, 8), prob=1.0)


def test_paired_partners_give_the_views_of_a_sample_one_partner():
    partner, owner = paired_partners([(4, 2), (3, 2)], torch.device('cpu'))
    assert partner.shape == owner.shape == (14,)
    assert torch.equal(partner[4:8], partner[:4] + 4)  # degraded rows: same sample's partner
    assert torch.equal(partner[11:], partner[8:11] + 3)
    assert sorted(partner[:4].tolist()) == [0, 1, 2, 3]  # within the block
    assert sorted(partner[8:11].tolist()) == [8, 9, 10]
    assert owner.tolist() == [0, 1, 2, 3] * 2 + [4, 5, 6] * 2


def test_mixstyle_changes_train_features_only_and_keeps_pairs_aligned():
    torch.manual_seed(1)
    layer = nn.Conv2d(3, 4, 3, padding=1)
    x = torch.rand(3, 3, 8, 8) * torch.tensor([1.0, 3.0, 0.2]).view(3, 1, 1, 1)  # 3 styles
    pair = torch.cat([x, x])  # 3 samples x (clean, degraded) with identical content
    mixer = MixStyle([layer], prob=1.0)
    plain = layer(pair)
    mixer.next_batch([(3, 2)], torch.device('cpu'))
    mixed = layer(pair)
    assert not torch.allclose(mixed, plain)
    assert torch.allclose(mixed[:3], mixed[3:])  # both views of a sample mixed alike
    layer.eval()
    assert torch.allclose(layer(pair), plain)  # eval mode: untouched
    layer.train()
    mixer.remove()
    assert torch.allclose(layer(pair), plain)


def test_mixstyle_probability_zero_never_mixes():
    layer = nn.Conv2d(3, 4, 1)
    x = torch.rand(4, 3, 8, 8)
    mixer = MixStyle([layer], prob=0.0)
    mixer.next_batch([(4, 1)], torch.device('cpu'))
    assert torch.allclose(layer(x), nn.functional.conv2d(x, layer.weight, layer.bias))


def test_mixstyle_hooks_our_icnet_and_training_still_runs():
    model = ICNet(ICNetConfig(width=8))
    mixer = MixStyle(mixstyle_layers(model), prob=1.0)
    mixer.next_batch([(2, 2)], torch.device('cpu'))
    logits, aux = model.forward_train(torch.rand(4, 3, 64, 64))
    logits.mean().backward()
    assert logits.shape == (4, 11, 64, 64) and all(torch.isfinite(a).all() for a in aux)
