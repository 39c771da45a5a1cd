"""The ablation layers (paper Tables 6, 9) on small cases computed by hand.
"""
import pytest
import torch
from mmcv.cnn import build_norm_layer

import dwnet_mm  # noqa: F401  (registers the norms)
from dwnet_mm.models.layers import (CenteringCalibratedBatchNorm, LayerNorm2d,
                                    SqueezeExcitation)


def test_squeeze_excitation_by_hand():
    se = SqueezeExcitation(2, ratio=0.5)  # hidden width 1
    with torch.no_grad():
        se.reduce.weight.copy_(torch.tensor([[1., -1.]]))
        se.reduce.bias.zero_()
        se.expand.weight.copy_(torch.tensor([[2.], [-1.]]))
        se.expand.bias.copy_(torch.tensor([0., 1.]))
    # Sample 0: channel means (3, 1) -> 3 - 1 = 2 -> relu 2 -> (4, -1)
    # -> gates sigmoid(4) = 0.98201379, sigmoid(-1) = 0.26894142.
    # Sample 1: means (1, 3) -> -2 -> relu 0 -> (0, 1) -> gates 0.5,
    # sigmoid(1) = 0.73105858.
    x = torch.tensor([[3., 1.], [1., 3.]])[:, :, None, None].expand(2, 2, 2, 2)
    expected = torch.tensor([[3 * 0.98201379, 1 * 0.26894142],
                             [1 * 0.5, 3 * 0.73105858]])
    out = se(x)
    torch.testing.assert_close(out, expected[:, :, None, None].expand(
        2, 2, 2, 2), rtol=1e-6, atol=1e-6)


def test_centering_calibrated_batch_norm_by_hand():
    norm = build_norm_layer(dict(type='CCBN', eps=1e-12), 1)[1]
    assert isinstance(norm, CenteringCalibratedBatchNorm)
    with torch.no_grad():
        norm.centering_weight.fill_(0.5)
        norm.weight.fill_(2.)
        norm.bias.fill_(1.)
    # Samples (1, 3) and (0, 2), means 2 and 1: calibrated (2, 4) and
    # (0.5, 2.5); batch mean 2.25, biased variance 1.5625 (std 1.25).
    x = torch.tensor([[[[1., 3.]]], [[[0., 2.]]]])
    out = norm.train()(x)
    expected = torch.tensor([[-0.2, 1.4], [-1.4, 0.2]]) * 2 + 1
    torch.testing.assert_close(out.flatten(1), expected)
    # Running statistics (momentum 0.1; unbiased variance 6.25 / 3).
    torch.testing.assert_close(norm.running_mean, torch.tensor([0.225]))
    torch.testing.assert_close(norm.running_var,
                               torch.tensor([0.9 + 0.1 * 6.25 / 3]))
    # Eval: the calibration stays per sample, the statistics are running.
    out = norm.eval()(x[:1])
    std = (0.9 + 0.1 * 6.25 / 3)**0.5
    expected = (torch.tensor([2., 4.]) - 0.225) / std * 2 + 1
    torch.testing.assert_close(out.flatten(), expected)


def test_centering_calibrated_batch_norm_starts_as_batch_norm():
    x = torch.randn(4, 3, 5, 6)
    cc = CenteringCalibratedBatchNorm(3)
    torch.testing.assert_close(cc(x), torch.nn.BatchNorm2d(3)(x))
    with torch.no_grad():
        cc.centering_weight.fill_(1.)
    assert (cc(x) - torch.nn.BatchNorm2d(3)(x)).abs().max() > 0.1


@pytest.mark.parametrize('channels_last', [False, True])
def test_layer_norm_2d_by_hand(channels_last):
    norm = build_norm_layer(dict(type='LN2d', eps=0.), 2)[1]
    assert isinstance(norm, LayerNorm2d)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([2., 3.]))
        norm.bias.copy_(torch.tensor([0., 1.]))
    # Channels (1, 3) at one position: mean 2, variance 1 -> (-1, 1).
    x = torch.tensor([1., 3.]).view(1, 2, 1, 1).repeat(1, 1, 2, 3)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    out = norm(x)
    assert out.shape == (1, 2, 2, 3)
    torch.testing.assert_close(
        out, torch.tensor([-2., 4.]).view(1, 2, 1, 1).expand(1, 2, 2, 3))
