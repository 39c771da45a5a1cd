"""Every ablation config (configs/cls/ablations) sets its row's option on the
paper's recipe, builds, and trains one step on CPU."""
import re

import pytest
import torch
from ablation_helpers import (ABLATION_CONFIGS, load_config, small_model,
                              train_step)

# Backbone keys of the inherited recipes.
DWNET_KEYS = {'type', 'arch', 'conv_type', 'kernel_size', 'drop_path_rate',
              'out_type', 'out_indices'}
SWIN_KEYS = {'type', 'arch', 'img_size', 'drop_path_rate'}


def _swin_norm(norm):
    return dict(stage_cfgs=dict(block_cfgs=dict(norm_cfg=dict(type=norm))))


# name: (backbone settings beyond the recipe's, (class name of the swapped
# module, how many the small model has)).
EXPECTED = {
    'dwnet-tiny-se_8xb128_in1k.py':
    (dict(se_ratio=1 / 16), ('SqueezeExcitation', 4)),
    'dwnet-tiny-extra-dw_8xb128_in1k.py':
    (dict(extra_dw=True), ('DepthwiseConvNorm', 4)),
    'dwnet-tiny-extra-dw-se_8xb128_in1k.py':
    (dict(extra_dw=True, extra_dw_se_ratio=1 / 16),
     ('SqueezeExcitation', 4)),
    'dwnet-tiny-ln_8xb128_in1k.py':
    (dict(norm_cfg=dict(type='LN2d')), ('LayerNorm2d', 16)),
    'dwnet-tiny-ccbn_8xb128_in1k.py':
    (dict(norm_cfg=dict(type='CCBN')), ('CenteringCalibratedBatchNorm', 16)),
    'dwnet-tiny-shared-dw_8xb128_in1k.py':
    (dict(dw_weight_groups=(3, 6, 12, 24)), ('SharedDepthwiseConv2d', 4)),
    'swin-tiny-static-attn_16xb64_in1k.py':
    (dict(type='SwinAblation', attention='static'), ('StaticWindowMSA', 8)),
    'swin-tiny-static-attn-shared_16xb64_in1k.py':
    (dict(type='SwinAblation', attention='static_shared'),
     ('StaticWindowMSA', 8)),
    'swin-tiny-se_16xb64_in1k.py':
    (dict(type='SwinAblation', se_ratio=1 / 16),
     ('TokenSqueezeExcitation', 8)),
    'swin-tiny-bn_16xb64_in1k.py': (_swin_norm('TokenBN'),
                                    ('TokenBatchNorm', 16)),
    'swin-tiny-ccbn_16xb64_in1k.py':
    (_swin_norm('TokenCCBN'), ('TokenCenteringCalibratedBatchNorm', 16)),
}


def _plain(value):
    """Config values as plain dicts/tuples, for comparisons."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return tuple(_plain(v) for v in value)
    return value


def test_every_config_has_expectations():
    assert ABLATION_CONFIGS == sorted(EXPECTED)


@pytest.mark.parametrize('name', ABLATION_CONFIGS)
def test_recipe(name):
    settings, _ = EXPECTED[name]
    cfg = load_config(name)
    assert cfg.default_scope == 'mmpretrain'
    assert cfg.custom_imports.imports == ['dwnet_mm']
    backbone = _plain(cfg.model.backbone)
    if name.startswith('dwnet'):
        recipe = dict(type='DWNet', arch='tiny', conv_type='static',
                      kernel_size=7, drop_path_rate=0.2,
                      out_type='avg_featmap', out_indices=-1)
        keys, batch, wrapper = DWNET_KEYS, 128, 'AmpOptimWrapper'
        assert cfg.model.neck is None
    else:
        recipe = dict(type='SwinTransformer', arch='tiny', img_size=224,
                      drop_path_rate=0.2)
        keys, batch, wrapper = SWIN_KEYS, 64, 'OptimWrapper'
        assert cfg.model.neck.type == 'GlobalAveragePooling'
    # The row's settings and nothing else on the recipe's backbone.
    assert set(backbone) == keys | set(settings)
    assert backbone == _plain({**recipe, **settings})
    assert cfg.model.head.in_channels == 768
    assert cfg.train_dataloader.batch_size == batch
    assert cfg.optim_wrapper.get('type', 'OptimWrapper') == wrapper
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, optimizer.weight_decay) == (
        'AdamW', 1e-3, 0.05)
    assert cfg.train_cfg.max_epochs == 300
    assert cfg.optim_wrapper.clip_grad == dict(max_norm=5.0)


@pytest.mark.parametrize('name', ABLATION_CONFIGS)
def test_train_step(name):
    """Builds with a small arch and trains one step: the loss is finite and
    the swapped modules are there and learn."""
    torch.manual_seed(0)
    model, cfg = small_model(name)
    cls_name, count = EXPECTED[name][1]
    swapped = [m for m in model.backbone.modules()
               if type(m).__name__ == cls_name]
    assert len(swapped) == count
    before = {n: p.detach().clone()
              for n, p in swapped[0].named_parameters()}
    assert before  # the marker module has parameters to learn

    # Swin's 7x7 windows need 224 inputs (7 at the last stage); DWNet
    # takes any size.
    size = 224 if name.startswith('swin') else 64
    log_vars = train_step(model, cfg, size)
    assert torch.isfinite(log_vars['loss'])
    changed = [n for n, p in swapped[0].named_parameters()
               if not torch.equal(p, before[n])]
    assert changed, 'no parameter of the swapped module was updated'


@pytest.mark.parametrize('name', [
    'swin-tiny-static-attn_16xb64_in1k.py',
    'swin-tiny-static-attn-shared_16xb64_in1k.py'
])
def test_static_logits_have_no_weight_decay(name):
    """As Swin's relative position bias table, which they replace."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import DefaultScope
    model, cfg = small_model(name)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        optimizer = build_optim_wrapper(model, cfg.optim_wrapper).optimizer
    decay = {}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in optimizer.param_groups:
        for param in group['params']:
            decay[names[id(param)]] = group['weight_decay']
    logits = [n for n in decay if re.search(r'\.attn_logits$', n)]
    assert len(logits) == 8
    assert {decay[n] for n in logits} == {0.0}
    assert decay['backbone.stages.0.blocks.0.attn.w_msa.v.weight'] == 0.05
