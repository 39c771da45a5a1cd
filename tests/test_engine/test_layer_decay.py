import pytest
import torch.nn as nn
from mmengine.registry import DefaultScope

from dwnet_mm.models import DWNet

SMALL = dict(channels=[8, 16, 32, 64], depths=[1, 1, 2, 1])


class Classifier(nn.Module):

    def __init__(self):
        super().__init__()
        self.backbone = DWNet(arch=SMALL)
        self.head = nn.Linear(64, 10)


OPTIM = dict(
    constructor='LayerDecayOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=1.0, weight_decay=0.05),
    paramwise_cfg=dict(layer_decay_rate=0.5, norm_decay_mult=0.,
                       bias_decay_mult=0.))


def _groups_by_name(model, optim_wrapper):
    names = {id(p): n for n, p in model.named_parameters()}
    return {
        names[id(g['params'][0])]: g
        for g in optim_wrapper.optimizer.param_groups
    }


@pytest.mark.parametrize('scope', ['mmpretrain', 'mmdet', 'mmseg'])
def test_layer_decay_in_each_framework(scope):
    from mmengine.optim import build_optim_wrapper
    model = Classifier()
    with DefaultScope.overwrite_default_scope(scope):
        wrapper = build_optim_wrapper(model, dict(OPTIM))
    groups = _groups_by_name(model, wrapper)
    num_layers = sum(SMALL['depths']) + 2  # 7
    assert len(groups) == len(list(model.parameters()))
    # lr = rate ** (num_layers - 1 - depth)
    assert groups['backbone.patch_embed.projection.weight']['lr'] == \
        pytest.approx(0.5**(num_layers - 1))
    assert groups['backbone.stages.0.blocks.0.mlp.fc1.weight']['lr'] == \
        pytest.approx(0.5**(num_layers - 2))
    assert groups['backbone.stages.2.blocks.1.mlp.fc1.weight']['lr'] == \
        pytest.approx(0.5**(num_layers - 5))
    assert groups['head.weight']['lr'] == pytest.approx(1.0)
    # norms and biases: no weight decay; weights keep it
    assert groups['backbone.stages.1.blocks.0.norm.weight'][
        'weight_decay'] == 0
    assert groups['head.bias']['weight_decay'] == 0
    assert groups['head.weight']['weight_decay'] == pytest.approx(0.05)


def test_layer_decay_needs_layer_depth():
    from mmengine.optim import build_optim_wrapper
    with pytest.raises(TypeError, match='get_layer_depth'):
        build_optim_wrapper(nn.Sequential(nn.Linear(2, 2)), dict(OPTIM))
