"""Which parameters each real config trains without weight decay, as
mmengine's own constructor groups them, against the authors' rule applied to
the same model under the authors' parameter names.

Authors' rules (REFERENCE.md section 4):
- COCO / ADE20K (their mmdet 2.x / mmseg 0.x configs): mmcv's custom_keys,
  a substring match on the full parameter name, with 'absolute_pos_embed',
  'relative_position_bias_table' and 'norm' at decay_mult 0; everything else
  decayed.
- ImageNet (their Swin trainer): no decay for 1-D parameters, names ending
  in '.bias' and the model's skip list / keywords.
"""
import gc

import pytest
from mmengine.optim import build_optim_wrapper
from recipes import (CLS_CONFIGS, DET_CONFIGS, SEG_CONFIGS, authors_names,
                     build_model, cpu_optim_wrapper_cfg, load,
                     zero_decay_names)
from torch.nn import GroupNorm, LayerNorm
from torch.nn.modules.batchnorm import _BatchNorm

DENSE_CUSTOM_KEYS = ('absolute_pos_embed', 'relative_position_bias_table',
                     'norm')
CLS_SKIP_LIST = ('absolute_pos_embed', )
CLS_SKIP_KEYWORDS = ('relative_position_bias_table', )


def authors_dense_rule(authors_name, ndim):
    return any(key in authors_name for key in DENSE_CUSTOM_KEYS)


def authors_cls_rule(authors_name, ndim):
    return (ndim == 1 or authors_name.endswith('.bias')
            or authors_name in CLS_SKIP_LIST
            or any(key in authors_name for key in CLS_SKIP_KEYWORDS))


@pytest.fixture(scope='module',
                params=DET_CONFIGS + SEG_CONFIGS + CLS_CONFIGS)
def built(request):
    """(config name, config, model): one model at a time."""
    cfg = load(request.param)
    model = build_model(cfg)
    yield request.param, cfg, model
    del model
    gc.collect()


def _partition_difference(zero, expected):
    return (f'zero decay here, decayed by the authors: '
            f'{sorted(zero - expected)[:8]}; decayed here, zero by the '
            f'authors: {sorted(expected - zero)[:8]}')


def test_zero_decay_is_the_authors(built):
    name, cfg, model = built
    classifier = name.startswith('cls/')
    rule = authors_cls_rule if classifier else authors_dense_rule
    authors = authors_names(model, cfg.model.backbone, classifier)
    expected = {n for n, (a, ndim) in authors.items() if rule(a, ndim)}

    wrapper = build_optim_wrapper(model, cpu_optim_wrapper_cfg(cfg))
    zero, every = zero_decay_names(model, wrapper)
    assert every == set(authors)
    assert zero == expected, _partition_difference(zero, expected)
    # The rule is not vacuous: both sides are populated.
    assert zero and every - zero
    base_wd = cfg.optim_wrapper.optimizer.weight_decay
    decays = {g['weight_decay'] for g in wrapper.optimizer.param_groups}
    assert decays == {0., base_wd}


def test_all_norms_option(built):
    """The documented non-default of det/seg: norm_decay_mult=0 also
    exempts every norm layer that the authors decayed."""
    name, cfg, model = built
    if name.startswith('cls/'):
        pytest.skip('classification already exempts every norm')
    norm_params = {
        f'{module_name}.{param_name}'
        for module_name, module in model.named_modules()
        if isinstance(module, (_BatchNorm, LayerNorm, GroupNorm))
        for param_name, _ in module.named_parameters(recurse=False)
    }
    authors = authors_names(model, cfg.model.backbone)
    expected = {n for n, (a, ndim) in authors.items()
                if authors_dense_rule(a, ndim)} | norm_params

    wrapper_cfg = cpu_optim_wrapper_cfg(cfg)
    wrapper_cfg.paramwise_cfg.norm_decay_mult = 0.
    zero, _ = zero_decay_names(model, build_optim_wrapper(model, wrapper_cfg))
    assert zero == expected, _partition_difference(zero, expected)
    # Block and head BNs are what the option adds.
    assert any('.blocks.' in n for n in zero - set(
        n for n, (a, d) in authors.items() if authors_dense_rule(a, d)))
