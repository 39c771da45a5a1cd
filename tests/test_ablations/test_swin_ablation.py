"""The SwinAblation builder: mmpretrain's Swin with swapped modules, and the
swaps really are in the forward pass."""
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
from ablation_helpers import SMALL_SWIN

from dwnet_mm.models.backbones.swin_ablation import TokenSqueezeExcitation
from dwnet_mm.models.layers import (SqueezeExcitation, TokenBatchNorm,
                                    TokenCenteringCalibratedBatchNorm)

NUM_BLOCKS = sum(SMALL_SWIN['depths'])


def _build(**kwargs):
    from mmengine.registry import MODELS

    import dwnet_mm  # noqa: F401
    torch.manual_seed(0)
    swin = MODELS.build(dict(type='SwinAblation', arch=SMALL_SWIN, **kwargs))
    swin.eval()  # mmpretrain's Swin.train() returns None: no chaining
    return swin


def _plain_swin(**kwargs):
    from mmpretrain.models import SwinTransformer
    torch.manual_seed(0)
    swin = SwinTransformer(arch=SMALL_SWIN, **kwargs)
    swin.eval()
    return swin


def _calls(model, cls, inputs):
    """How many times modules of ``cls`` run in one forward."""
    calls = []
    handles = [
        m.register_forward_hook(lambda *_: calls.append(1))
        for m in model.modules() if type(m) is cls
    ]
    with torch.no_grad():
        out = model(inputs)[0]
    for handle in handles:
        handle.remove()
    return len(calls), out


def _images(size=224):
    return torch.randn(2, 3, size, size,
                       generator=torch.Generator().manual_seed(1))


def test_dynamic_is_mmpretrain_swin():
    swin, plain = _build(), _plain_swin()
    assert type(swin) is type(plain)
    state, plain_state = swin.state_dict(), plain.state_dict()
    assert list(state) == list(plain_state)
    for key, value in state.items():
        assert torch.equal(value, plain_state[key]), key


def test_unknown_attention():
    with pytest.raises(ValueError, match="'dynamic', 'static', "
                       "'static_shared'"):
        _build(attention='local')


def test_se_modules_and_placement():
    swin, plain = _build(se_ratio=1 / 16), _plain_swin()
    ses = [m for m in swin.modules() if type(m) is TokenSqueezeExcitation]
    assert len(ses) == NUM_BLOCKS
    # SENet's reduction 16, rounded: 24 -> 2, 48 -> 3, 96 -> 6, 192 -> 12.
    assert [se.reduce.out_features for se in ses] == [2, 2, 3, 3, 6, 6, 12,
                                                      12]
    for stage in swin.stages:
        for block in stage.blocks:
            assert list(block.attn.drop) == [block.attn.drop.se,
                                             block.attn.drop.drop_path]
    x = _images()
    calls, out = _calls(swin, TokenSqueezeExcitation, x)
    assert calls == NUM_BLOCKS

    # The same weights without SE: the keys differ by the SE's only.
    missing, unexpected = plain.load_state_dict(swin.state_dict(),
                                                strict=False)
    assert not missing and all('.attn.drop.se.' in k for k in unexpected)
    with torch.no_grad():
        reference = plain(x)[0]
        assert not torch.allclose(out, reference, atol=1e-3)
        # Gates forced open (sigmoid(50) = 1): plain Swin.
        for se in ses:
            se.expand.weight.zero_()
            se.expand.bias.fill_(50.)
        torch.testing.assert_close(swin(x)[0], reference)
        # Gates closed: the attention branch is gone, not the residual;
        # plain Swin with zero attention outputs.
        for se in ses:
            se.expand.bias.fill_(-50.)
        for stage in plain.stages:
            for block in stage.blocks:
                block.attn.w_msa.proj.weight.zero_()
                block.attn.w_msa.proj.bias.zero_()
        torch.testing.assert_close(swin(x)[0], plain(x)[0])


def test_token_se_is_image_level():
    torch.manual_seed(0)
    se = TokenSqueezeExcitation(32, 1 / 16)
    x = torch.randn(2, 49 * 4, 32)
    gate = torch.sigmoid(
        se.expand(torch.relu(se.reduce(x.mean(dim=1, keepdim=True)))))
    torch.testing.assert_close(se(x), x * gate)
    assert isinstance(se, SqueezeExcitation)


@pytest.mark.parametrize('norm,cls', [('TokenBN', TokenBatchNorm),
                                      ('TokenCCBN',
                                       TokenCenteringCalibratedBatchNorm)])
def test_norm_swap(norm, cls):
    swin = _build(stage_cfgs=dict(block_cfgs=dict(norm_cfg=dict(type=norm))))
    norms = [m for m in swin.modules() if type(m) is cls]
    assert len(norms) == 2 * NUM_BLOCKS
    for stage in swin.stages:
        for block in stage.blocks:
            assert type(block.norm1) is cls and type(block.norm2) is cls
        if stage.downsample is not None:
            assert type(stage.downsample.norm) is nn.LayerNorm
    assert type(swin.patch_embed.norm) is nn.LayerNorm
    assert type(swin.norm3) is nn.LayerNorm
    layer_norms = [m for m in swin.modules() if type(m) is nn.LayerNorm]
    assert len(layer_norms) == 1 + 3 + 1  # stem, 3 mergings, output

    x = _images()
    calls, out = _calls(swin, cls, x)
    assert calls == 2 * NUM_BLOCKS
    # Eval mode uses the running statistics: changing them changes the
    # output only if the swapped norms are the ones that run.
    with torch.no_grad():
        swin.stages[0].blocks[0].norm1.running_mean.fill_(.5)
        assert not torch.allclose(swin(x)[0], out, atol=1e-3)


def test_builder_needs_mmpretrain():
    code = ('import sys\n'
            'sys.modules["mmpretrain"] = None  # as if not installed\n'
            'import dwnet_mm\n'
            'from mmengine.registry import MODELS\n'
            'try:\n'
            '    MODELS.build(dict(type="SwinAblation"))\n'
            'except ImportError as e:\n'
            '    print(e)\n')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, check=True).stdout
    assert "type='SwinAblation' needs mmpretrain" in out
    assert "pip install 'dwnet-mm[cls]'" in out
