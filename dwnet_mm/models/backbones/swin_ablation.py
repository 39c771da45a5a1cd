"""Swin Transformer variants of the paper's ablations (Tables 4, 6, 9, 10).

``type='SwinAblation'`` builds mmpretrain's own ``SwinTransformer`` and swaps
modules in it, so every variant keeps mmpretrain's Swin (weights layout,
``get_layer_depth``, checkpoint hooks) except the part the ablation changes.
mmpretrain is imported when a model is built, not when ``dwnet_mm`` is.
"""
import math
from collections import OrderedDict

import torch.nn as nn
from mmengine.registry import MODELS

from ..layers.norms import OnTokens
from ..layers.squeeze_excitation import SqueezeExcitation
from ..layers.static_window_attention import StaticWindowMSA

ATTENTION_TYPES = ('dynamic', 'static', 'static_shared')


class TokenSqueezeExcitation(OnTokens, SqueezeExcitation):
    """:class:`SqueezeExcitation` on (N, L, C) tokens: the gate is computed
    from the mean of each image's L tokens.

    Args:
        channels (int): Number of channels C.
        ratio (float): Hidden width as a fraction of C. Defaults to 1/16.
    """


# Registered in mmengine's root registry (mmpretrain's is a child of it) as
# a builder function: the model it returns is a plain mmpretrain
# SwinTransformer.
@MODELS.register_module('SwinAblation')
def build_swin_ablation(attention='dynamic', se_ratio=0., **kwargs):
    """Build mmpretrain's ``SwinTransformer`` with the attention or SE of an
    ablation of the paper.

    Variants:

    - ``attention='static'`` (Table 4): the window attention of every block
      becomes :class:`StaticWindowMSA` with one learned (heads, N, N) logit
      table per window position; the model then only takes inputs of
      ``img_size`` (224: 8x8, 4x4, 2x2 and 1x1 windows of 7x7 in the four
      stages) and raises a ValueError naming it otherwise.
    - ``attention='static_shared'`` (Table 10): the same with one table
      shared by all windows; any input size.
    - ``se_ratio > 0`` (Table 6): squeeze-and-excitation on each block's
      attention output, before stochastic depth and the residual add.
      Reading: the SE gate is computed from the whole image (after the
      windows are merged back), the analogue of DWNet's SE after its
      depth-wise conv; the window-level output projection stays before it.
      The paper's SE is SENet's, reduction 16 (``se_ratio=1/16``).
    - norms (Table 9): no option here; pass mmpretrain's own
      ``stage_cfgs=dict(block_cfgs=dict(norm_cfg=dict(type='TokenBN')))``
      (or ``'TokenCCBN'``) to swap the two norms of every block. The
      patch-embedding, patch-merging and output LayerNorms stay.

    The static and SE variants export to ONNX (TorchScript-based exporter)
    at a fixed input shape, see :class:`StaticWindowMSA`.

    Args:
        attention (str): 'dynamic' (Swin's attention, unchanged), 'static'
            or 'static_shared'. Defaults to 'dynamic'.
        se_ratio (float): Hidden width of the SE gate as a fraction of the
            channels; 0 adds no SE. Defaults to 0.
        **kwargs: Arguments of mmpretrain's ``SwinTransformer`` (``arch``,
            ``img_size``, ``drop_path_rate``, ``stage_cfgs``, ...).

    Returns:
        nn.Module: A ``mmpretrain.models.SwinTransformer``.
    """
    if attention not in ATTENTION_TYPES:
        raise ValueError(f'attention must be one of {ATTENTION_TYPES}, got '
                         f'{attention!r}')
    from ...utils.frameworks import require_framework
    require_framework('mmpretrain', "type='SwinAblation'")
    from mmpretrain.models import SwinTransformer

    swin = SwinTransformer(**kwargs)
    img_size = kwargs.get('img_size', 224)
    hw_shape = swin.patch_resolution
    for stage in swin.stages:
        for block in stage.blocks:
            if attention != 'dynamic':
                _use_static_attention(block.attn, hw_shape, img_size,
                                      shared=attention == 'static_shared')
            if se_ratio:
                block.attn.drop = nn.Sequential(
                    OrderedDict(
                        se=TokenSqueezeExcitation(stage.embed_dims, se_ratio),
                        drop_path=block.attn.drop))
        # Patch merging pads odd maps, so sizes round up.
        hw_shape = tuple(math.ceil(size / 2) for size in hw_shape)
    return swin


def _use_static_attention(shift_msa, hw_shape, img_size, shared):
    """Replace the ``w_msa`` of one ``ShiftWindowMSA`` by static weights."""
    dynamic = shift_msa.w_msa
    window = shift_msa.window_size
    static = StaticWindowMSA(
        embed_dims=dynamic.embed_dims,
        window_size=window,
        num_heads=dynamic.num_heads,
        window_grid=tuple(math.ceil(size / window) for size in hw_shape),
        shared_across_windows=shared,
        img_size=img_size,
        qkv_bias=dynamic.qkv.bias is not None,
        attn_drop=dynamic.attn_drop.p,
        proj_drop=dynamic.proj_drop.p)
    shift_msa.w_msa = static
    if not shared:
        # The windows reach w_msa as one batch; the feature-map size that
        # tells a wrong input size apart is only known here.
        shift_msa.register_forward_pre_hook(
            _check_static_windows, with_kwargs=True)


def _check_static_windows(shift_msa, args, kwargs):
    hw_shape = args[1] if len(args) > 1 else kwargs['hw_shape']
    shift_msa.w_msa.check_input_shape(hw_shape)
