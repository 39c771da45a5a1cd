"""TokenBN and TokenCCBN (Swin's norms of Table 9) against the formulas,
computed by hand in training mode (batch statistics)."""
import math

import pytest
import torch

from dwnet_mm.models.layers import (TokenBatchNorm,
                                    TokenCenteringCalibratedBatchNorm)

# (N=2 images, L=3 tokens, C=2 channels)
TOKENS = [[[1., 2.], [3., 4.], [5., 9.]],
          [[0., -1.], [2., 6.], [4., 1.]]]
WEIGHT, BIAS = [2., .5], [1., -1.]
CENTERING = [.5, -2.]
EPS, MOMENTUM = 1e-5, .1


def _calibrate(tokens, centering):
    """x + w_c * (mean of the image's tokens in channel c)."""
    out = []
    for image in tokens:
        means = [sum(t[c] for t in image) / len(image) for c in range(2)]
        out.append([[t[c] + centering[c] * means[c] for c in range(2)]
                    for t in image])
    return out


def _batch_norm(tokens):
    """Normalise each channel over all N * L tokens; also return the
    running statistics after one update from (0, 1)."""
    out = [[[0., 0.] for _ in image] for image in tokens]
    running_mean, running_var = [], []
    for c in range(2):
        values = [t[c] for image in tokens for t in image]
        n = len(values)
        mean = sum(values) / n
        var = sum((v - mean)**2 for v in values) / n  # biased: normalising
        for i, image in enumerate(tokens):
            for j, t in enumerate(image):
                out[i][j][c] = ((t[c] - mean) / math.sqrt(var + EPS) *
                                WEIGHT[c] + BIAS[c])
        running_mean.append(MOMENTUM * mean)
        running_var.append((1 - MOMENTUM) + MOMENTUM * var * n / (n - 1))
    return out, running_mean, running_var


def _run(norm):
    with torch.no_grad():
        norm.weight.copy_(torch.tensor(WEIGHT))
        norm.bias.copy_(torch.tensor(BIAS))
    norm.train()
    return norm(torch.tensor(TOKENS))


def _check(norm, out, expected):
    expected_out, running_mean, running_var = expected
    assert out.shape == (2, 3, 2)
    assert out.tolist() == [[pytest.approx(t, abs=1e-5) for t in image]
                            for image in expected_out]
    assert norm.running_mean.tolist() == pytest.approx(running_mean)
    assert norm.running_var.tolist() == pytest.approx(running_var)


def test_token_bn():
    norm = TokenBatchNorm(2, eps=EPS, momentum=MOMENTUM)
    _check(norm, _run(norm), _batch_norm(TOKENS))


def test_token_ccbn():
    norm = TokenCenteringCalibratedBatchNorm(2, eps=EPS, momentum=MOMENTUM)
    with torch.no_grad():
        norm.centering_weight.copy_(torch.tensor(CENTERING))
    out = _run(norm)
    _check(norm, out, _batch_norm(_calibrate(TOKENS, CENTERING)))
    # The calibration matters: it is not the plain BatchNorm.
    plain, _, _ = _batch_norm(TOKENS)
    assert out.tolist() != [[pytest.approx(t, abs=1e-3) for t in image]
                            for image in plain]


def test_token_ccbn_starts_as_bn():
    ccbn = TokenCenteringCalibratedBatchNorm(2, eps=EPS, momentum=MOMENTUM)
    assert ccbn.centering_weight.tolist() == [0., 0.]
    bn = TokenBatchNorm(2, eps=EPS, momentum=MOMENTUM)
    torch.testing.assert_close(_run(ccbn), _run(bn))
