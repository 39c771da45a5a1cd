"""Static window attention (paper Tables 4 and 10) against hand-computed
values, and its fixed-input-size contract."""
import math

import pytest
import torch
import torch.nn as nn
from ablation_helpers import SMALL_SWIN

from dwnet_mm.models.layers.static_window_attention import StaticWindowMSA

MASKED = -100.  # Swin's value for positions of other shifted regions


def _identity_projections(module):
    """Make ``v`` and ``proj`` identities, so the output is weights @ x."""
    for linear in (module.v, module.proj):
        nn.init.eye_(linear.weight)
        nn.init.zeros_(linear.bias)


def _hand_case():
    """2 images, 2 windows of 2x2 (N=4) per image, 2 heads of 1 channel.

    Logit rows (the same for each query): window 0: head 0 uniform, head 1
    log(1, 2, 3, 4); window 1: head 0 log(4, 3, 2, 1), head 1 uniform; the
    shift mask removes key 0 of window 1. Inputs
    x[image, window, token, channel] = (token + 1) * (channel + 1)
    + 10 * window + 100 * image.
    """
    module = StaticWindowMSA(2, 2, num_heads=2, window_grid=(1, 2))
    _identity_projections(module)
    rows = torch.tensor([[0., 0., 0., 0.],
                         [math.log(1), math.log(2), math.log(3), math.log(4)],
                         [math.log(4), math.log(3), math.log(2), math.log(1)],
                         [0., 0., 0., 0.]])
    with torch.no_grad():
        module.attn_logits.copy_(rows.view(2, 2, 1, 4).expand(2, 2, 4, 4))
    mask = torch.zeros(2, 4, 4)
    mask[1, :, 0] = MASKED
    x = torch.tensor([[[[(n + 1) * (c + 1) + 10 * w + 100 * i
                         for c in range(2)] for n in range(4)]
                       for w in range(2)] for i in range(2)],
                     dtype=torch.float32)
    return module, x.view(4, 4, 2), mask


def test_hand_computed_values():
    module, x, mask = _hand_case()
    out = module.eval()(x, mask=mask).view(2, 2, 4, 2)
    # (image, window, channel): sum_m weights[m] * x[m], the same for every
    # query token.
    expected = {
        # window 0, head 0: uniform
        (0, 0, 0): (1 + 2 + 3 + 4) / 4,
        (1, 0, 0): (101 + 102 + 103 + 104) / 4,
        # window 0, head 1: .1 .2 .3 .4
        (0, 0, 1): .1 * 2 + .2 * 4 + .3 * 6 + .4 * 8,
        (1, 0, 1): .1 * 102 + .2 * 104 + .3 * 106 + .4 * 108,
        # window 1, head 0: key 0 masked, (3, 2, 1) / 6 on keys 1-3
        (0, 1, 0): (3 * 12 + 2 * 13 + 1 * 14) / 6,
        (1, 1, 0): (3 * 112 + 2 * 113 + 1 * 114) / 6,
        # window 1, head 1: key 0 masked, uniform on keys 1-3
        (0, 1, 1): (14 + 16 + 18) / 3,
        (1, 1, 1): (114 + 116 + 118) / 3,
    }
    for (image, window, channel), value in expected.items():
        got = out[image, window, :, channel]
        assert got.tolist() == pytest.approx([value] * 4, abs=1e-4)


def _reference(module, x, mask):
    """softmax(logits + mask) @ v, then proj, with explicit loops."""
    v = module.v(x)
    windows, heads, tokens, _ = module.attn_logits.shape
    head_dims = module.embed_dims // heads
    out = torch.zeros_like(v)
    for b in range(x.shape[0]):
        w = b % windows  # windows of one image are consecutive
        for h in range(heads):
            for i in range(tokens):
                logits = [
                    module.attn_logits[w, h, i, j].item() +
                    (0. if mask is None else mask[w, i, j].item())
                    for j in range(tokens)
                ]
                top = max(logits)
                exps = [math.exp(v_ - top) for v_ in logits]
                total = sum(exps)
                for j in range(tokens):
                    for d in range(h * head_dims, (h + 1) * head_dims):
                        out[b, i, d] += exps[j] / total * v[b, j, d]
    return module.proj(out)


@pytest.mark.parametrize('with_mask', [False, True])
def test_matches_loop_reference(with_mask):
    torch.manual_seed(0)
    module = StaticWindowMSA(4, 2, num_heads=2, window_grid=(2, 1)).eval()
    with torch.no_grad():
        module.attn_logits.normal_()  # far from uniform
    x = torch.randn(2 * 2, 4, 4)
    mask = None
    if with_mask:
        mask = torch.zeros(2, 4, 4)
        mask[0, :2, 2:] = mask[0, 2:, :2] = MASKED
    with torch.no_grad():
        out = module(x, mask=mask)
        expected = _reference(module, x, mask)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('with_mask', [False, True])
def test_shared_equals_per_window_with_equal_tables(with_mask):
    torch.manual_seed(0)
    per_window = StaticWindowMSA(6, 2, num_heads=3, window_grid=(2, 2))
    shared = StaticWindowMSA(6, 2, num_heads=3, shared_across_windows=True)
    assert shared.attn_logits.shape == (3, 4, 4)
    assert per_window.attn_logits.shape == (4, 3, 4, 4)
    table = torch.randn(3, 4, 4)
    with torch.no_grad():
        shared.attn_logits.copy_(table)
        per_window.attn_logits.copy_(table.expand(4, 3, 4, 4))
    shared.v.load_state_dict(per_window.v.state_dict())
    shared.proj.load_state_dict(per_window.proj.state_dict())
    x = torch.randn(3 * 4, 4, 6)
    mask = None
    if with_mask:
        mask = torch.zeros(4, 4, 4)
        mask[1:, 0, 1:] = MASKED
    torch.testing.assert_close(shared(x, mask), per_window(x, mask))
    # A different table in one window changes only that window's output.
    with torch.no_grad():
        per_window.attn_logits[2].add_(torch.randn(3, 4, 4))
    diff = (shared(x, mask) - per_window(x, mask)).abs().amax(dim=(1, 2))
    changed = (diff > 1e-6).view(3, 4)
    assert changed.tolist() == [[False, False, True, False]] * 3


def test_init():
    torch.manual_seed(0)
    module = StaticWindowMSA(96, 7, num_heads=3, window_grid=(8, 8))
    logits = module.attn_logits
    assert logits.shape == (64, 3, 49, 49)
    assert logits.std().item() == pytest.approx(.02, rel=.05)
    assert abs(logits.mean().item()) < 1e-3
    assert module.v.bias is not None
    assert [n for n, _ in module.named_parameters()] == [
        'attn_logits', 'v.weight', 'v.bias', 'proj.weight', 'proj.bias'
    ]
    with pytest.raises(ValueError, match='window_grid'):
        StaticWindowMSA(96, 7, num_heads=3)


def test_wrong_window_count():
    module = StaticWindowMSA(4, 7, num_heads=2, window_grid=(8, 8),
                             img_size=224)
    message = (r'StaticWindowMSA has per-window weights for 8x8 windows per '
               r'image, i.e. a 224x224 input, but got {}\. Build the model '
               r'with img_size equal to the input size, or share the '
               r"weights across windows \(attention='static_shared'")
    with pytest.raises(ValueError,
                       match=message.format('a 64x64 feature map '
                                            r'\(10x10 windows\)')):
        module.check_input_shape((64, 64))
    module.check_input_shape((56, 56))
    module.check_input_shape((51, 52))  # padded to 8x8 windows
    x = torch.randn(100, 49, 4)
    with pytest.raises(ValueError,
                       match=message.format('a batch of 100 windows')):
        module(x)
    with pytest.raises(ValueError, match=message.format(
            'a shift mask for 100 windows')):
        module(x, mask=torch.zeros(100, 49, 49))
    assert module(torch.randn(128, 49, 4)).shape == (128, 49, 4)


def _small_swin(**kwargs):
    from mmengine.registry import MODELS

    import dwnet_mm  # noqa: F401
    swin = MODELS.build(dict(type='SwinAblation', arch=SMALL_SWIN, **kwargs))
    swin.eval()  # mmpretrain's Swin.train() returns None: no chaining
    return swin


def test_swin_wrong_input_size():
    torch.manual_seed(0)
    swin = _small_swin(attention='static')
    with torch.no_grad():
        assert swin(torch.randn(1, 3, 224, 224))[0].shape == (1, 192, 7, 7)
        # The first (unshifted) block would take 2 images' 10x10 windows as
        # 200 / 64 images; the feature-map check stops it.
        with pytest.raises(ValueError, match=r'8x8 windows per image, i\.e\. '
                           r'a 224x224 input, but got a 64x64 feature map'):
            swin(torch.randn(2, 3, 256, 256))
    shared = _small_swin(attention='static_shared')
    with torch.no_grad():
        assert shared(torch.randn(1, 3, 256, 256))[0].shape == (1, 192, 8, 8)


def test_swin_tiny_windows_and_params():
    """Swin-T at 224: 8x8, 4x4, 2x2 and 1x1 windows (stage 4: the 7x7 map
    is one window, unshifted); parameters as counted by hand."""
    from mmpretrain.models import SwinTransformer
    from mmpretrain.models.utils.attention import WindowMSA
    static = _small_swin_tiny('static')
    grids, shapes = [], []
    for stage in static.stages:
        msa = stage.blocks[0].attn.w_msa
        assert isinstance(msa, StaticWindowMSA)
        grids.append(msa.window_grid)
        shapes.append(tuple(msa.attn_logits.shape))
    assert grids == [(8, 8), (4, 4), (2, 2), (1, 1)]
    assert shapes == [(64, 3, 49, 49), (16, 6, 49, 49), (4, 12, 49, 49),
                      (1, 24, 49, 49)]
    assert not any(isinstance(m, WindowMSA) for m in static.modules())

    def count(model):
        return sum(p.numel() for p in model.parameters())

    # Per block: q and k projections (2 C^2 + 2 C) and the relative position
    # bias table (13 * 13 * heads) go, a logit table per window comes.
    dims, heads, depths = (96, 192, 384, 768), (3, 6, 12, 24), (2, 2, 6, 2)
    windows = (64, 16, 4, 1)
    delta = sum(d * (windows[i] * heads[i] * 49 * 49 - 2 * dims[i]**2 -
                     2 * dims[i] - 169 * heads[i])
                for i, d in enumerate(depths))
    swin = SwinTransformer(arch='tiny')
    assert count(static) - count(swin) == delta
    shared = _small_swin_tiny('static_shared')
    assert count(shared) - count(static) == sum(
        d * (1 - windows[i]) * heads[i] * 49 * 49
        for i, d in enumerate(depths))


def _small_swin_tiny(attention):
    from mmengine.registry import MODELS

    import dwnet_mm  # noqa: F401
    return MODELS.build(
        dict(type='SwinAblation', arch='tiny', attention=attention))
