"""Loading the authors' released checkpoint layout (REFERENCE section 5)."""
import sys
import types

import pytest
import torch

from dwnet_mm.converters import (UnknownCheckpointLayout,
                                 load_dwnet_checkpoint)
from dwnet_mm.models import DWNet

SMALL = dict(channels=[32, 64, 128, 256], depths=[1, 1, 2, 1])


def _bn(prefix, c):
    return {
        f'{prefix}.weight': (c, ),
        f'{prefix}.bias': (c, ),
        f'{prefix}.running_mean': (c, ),
        f'{prefix}.running_var': (c, ),
        f'{prefix}.num_batches_tracked': (),
    }


def authors_shapes(channels, depths, conv_type='static', k=7, groups=32,
                   classes=10, dense=False):
    """Parameter names and shapes of the authors' code, written out from
    the release notes rather than derived from dwnet_mm."""
    shapes = {
        'patch_embed.proj.weight': (channels[0], 3, 4, 4),
        'patch_embed.proj.bias': (channels[0], ),
        'patch_embed.norm.weight': (channels[0], ),
        'patch_embed.norm.bias': (channels[0], ),
    }
    for s, (c, depth) in enumerate(zip(channels, depths)):
        for b in range(depth):
            p = f'layers.{s}.blocks.{b}'
            shapes[f'{p}.attn2conv.conv0.weight'] = (c, c, 1, 1)
            shapes.update(_bn(f'{p}.attn2conv.bn0', c))
            if conv_type == 'static':
                shapes[f'{p}.attn2conv.conv.weight'] = (c, 1, k, k)
                shapes[f'{p}.attn2conv.conv.bias'] = (c, )
            elif conv_type == 'dynamic':
                shapes[f'{p}.attn2conv.conv.conv1.weight'] = (c // 4, c, 1, 1)
                shapes.update(_bn(f'{p}.attn2conv.conv.bn', c // 4))
                shapes[f'{p}.attn2conv.conv.conv2.weight'] = (c * k * k,
                                                              c // 4, 1, 1)
                shapes[f'{p}.attn2conv.conv.conv2.bias'] = (c * k * k, )
                shapes[f'{p}.attn2conv.conv.bias'] = (c, )
            else:
                shapes[f'{p}.attn2conv.conv.conv1.0.weight'] = (c // 4, c, 1,
                                                                1)
                shapes[f'{p}.attn2conv.conv.conv1.0.bias'] = (c // 4, )
                shapes.update(_bn(f'{p}.attn2conv.conv.conv1.1', c // 4))
                shapes[f'{p}.attn2conv.conv.conv2.0.weight'] = (k * k * groups,
                                                                c // 4, 1, 1)
                shapes[f'{p}.attn2conv.conv.conv2.0.bias'] = (k * k * groups, )
            shapes.update(_bn(f'{p}.attn2conv.bn', c))
            shapes[f'{p}.attn2conv.conv2.weight'] = (c, c, 1, 1)
            shapes.update(_bn(f'{p}.attn2conv.bn2', c))
            shapes.update(_bn(f'{p}.bn', c))
            shapes[f'{p}.mlp.fc1.weight'] = (4 * c, c)
            shapes[f'{p}.mlp.fc1.bias'] = (4 * c, )
            shapes[f'{p}.mlp.fc2.weight'] = (c, 4 * c)
            shapes[f'{p}.mlp.fc2.bias'] = (c, )
        if s < len(channels) - 1:
            shapes[f'layers.{s}.downsample.norm.weight'] = (4 * c, )
            shapes[f'layers.{s}.downsample.norm.bias'] = (4 * c, )
            shapes[f'layers.{s}.downsample.reduction.weight'] = (2 * c, 4 * c)
    if dense:
        for i, c in enumerate(channels):
            shapes.update(_bn(f'norm{i}', c))
    else:
        shapes['norm.weight'] = (channels[-1], )
        shapes['norm.bias'] = (channels[-1], )
        shapes['head.weight'] = (classes, channels[-1])
        shapes['head.bias'] = (classes, )
    return shapes


def make_state_dict(shapes, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {
        k: (torch.randint(1, 100, s, generator=gen) if k.endswith(
            'num_batches_tracked') else torch.randn(*s, generator=gen).abs() +
            0.1)
        for k, s in shapes.items()
    }


class FakeConfig(dict):
    """Stands for the authors' pickled training config, a yacs CfgNode
    (a dict with a few attributes); pickled as ``yacs.config.CfgNode``."""

    def __init__(self):
        super().__init__(MODEL={'TYPE': 'dwnet'})
        self.__dict__['__immutable__'] = False
        self.__dict__['__deprecated_keys__'] = set()


FakeConfig.__module__ = 'yacs.config'
FakeConfig.__name__ = FakeConfig.__qualname__ = 'CfgNode'


def save_with_config(checkpoint, path, monkeypatch):
    """torch.save with a FakeConfig under 'config' (yacs is not installed:
    a stand-in ``yacs.config`` module exists only while saving)."""
    package = types.ModuleType('yacs')
    package.config = types.ModuleType('yacs.config')
    package.config.CfgNode = FakeConfig
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, 'yacs', package)
        patch.setitem(sys.modules, 'yacs.config', package.config)
        torch.save(dict(checkpoint, config=FakeConfig()), path)


@pytest.mark.parametrize('conv_type', ['static', 'dynamic', 'i_dynamic'])
def test_authors_cls_file_into_classifier_backbone(tmp_path, conv_type,
                                                   monkeypatch):
    sd = make_state_dict(
        authors_shapes(SMALL['channels'], SMALL['depths'], conv_type))
    path = tmp_path / 'authors.pth'
    save_with_config({'model': sd, 'optimizer': {'state': {}},
                      'epoch': 299}, path, monkeypatch)
    model = DWNet(arch=SMALL, conv_type=conv_type, out_type='avg_featmap',
                  out_indices=-1,
                  init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    own = model.state_dict()
    # Spot checks of the renaming, value by value.
    p = 'layers.2.blocks.1.attn2conv'
    q = 'stages.2.blocks.1.mixer'
    torch.testing.assert_close(own[f'{q}.pointwise_in.conv.weight'],
                               sd[f'{p}.conv0.weight'])
    torch.testing.assert_close(own[f'{q}.pointwise_in.bn.running_var'],
                               sd[f'{p}.bn0.running_var'])
    torch.testing.assert_close(own[f'{q}.depthwise.norm.weight'],
                               sd[f'{p}.bn.weight'])
    torch.testing.assert_close(own[f'{q}.pointwise_out.conv.weight'],
                               sd[f'{p}.conv2.weight'])
    torch.testing.assert_close(own[f'{q}.pointwise_out.bn.bias'],
                               sd[f'{p}.bn2.bias'])
    torch.testing.assert_close(own['stages.2.blocks.1.norm.weight'],
                               sd['layers.2.blocks.1.bn.weight'])
    torch.testing.assert_close(own['norm3.weight'], sd['norm.weight'])
    torch.testing.assert_close(own['patch_embed.projection.weight'],
                               sd['patch_embed.proj.weight'])
    torch.testing.assert_close(own['stages.1.downsample.reduction.weight'],
                               sd['layers.1.downsample.reduction.weight'])
    # Every backbone tensor of the file went somewhere, and all were filled.
    backbone_keys = [k for k in sd if not k.startswith('head.')]
    assert len(own) == len(backbone_keys)
    own_values = sorted(float(v.float().sum()) for v in own.values())
    file_values = sorted(float(sd[k].float().sum()) for k in backbone_keys)
    assert own_values == pytest.approx(file_values)


def test_authors_cls_file_into_dense_backbone(tmp_path):
    sd = make_state_dict(authors_shapes(SMALL['channels'], SMALL['depths']))
    path = tmp_path / 'authors.pth'
    torch.save({'model': sd}, path)
    model = DWNet(arch=SMALL, out_type='featmap', out_indices=(0, 1, 2, 3),
                  init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    before = model.norm3.running_var.clone()
    model.init_weights()
    # The classification LayerNorm is not loaded into the dense BN norm.
    torch.testing.assert_close(model.norm3.running_var, before)
    torch.testing.assert_close(
        model.state_dict()['stages.3.blocks.0.mlp.fc2.bias'],
        sd['layers.3.blocks.0.mlp.fc2.bias'])


def test_authors_dense_release(tmp_path):
    shapes = authors_shapes(SMALL['channels'], SMALL['depths'], dense=True)
    sd = {f'backbone.{k}': v for k, v in make_state_dict(shapes).items()}
    sd['neck.lateral_convs.0.conv.weight'] = torch.randn(8, 32, 1, 1)
    path = tmp_path / 'cascade.pth'
    torch.save({'state_dict': sd, 'meta': {'epoch': 36}}, path)
    model = DWNet(arch=SMALL, out_type='featmap', out_indices=(0, 1, 2, 3),
                  pad_to_window=True,
                  init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    torch.testing.assert_close(model.norm1.running_mean,
                               sd['backbone.norm1.running_mean'])
    own = model.state_dict()
    assert len(own) == len(shapes)


def test_dwnet_mm_checkpoint_roundtrip(tmp_path):
    src = DWNet(arch=SMALL, conv_type='dynamic')
    path = tmp_path / 'ours.pth'
    torch.save({'state_dict': {f'backbone.{k}': v
                               for k, v in src.state_dict().items()}}, path)
    dst = DWNet(arch=SMALL, conv_type='dynamic',
                init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    dst.init_weights()
    for k, v in src.state_dict().items():
        torch.testing.assert_close(dst.state_dict()[k], v)


def test_kernel_resize_for_finetuning(tmp_path):
    sd = make_state_dict(authors_shapes(SMALL['channels'], SMALL['depths']))
    path = tmp_path / 'authors.pth'
    torch.save({'model': sd}, path)
    model = DWNet(arch=SMALL, kernel_size=12,
                  init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(RuntimeError, match='resize_kernels=True'):
        model.init_weights()
    model = DWNet(arch=SMALL, kernel_size=12,
                  init_cfg=dict(type='Pretrained', checkpoint=str(path),
                                resize_kernels=True))
    model.init_weights()
    w = model.stages[0].blocks[0].mixer.depthwise.conv.weight
    assert w.shape == (32, 1, 12, 12)
    src = sd['layers.0.blocks.0.attn2conv.conv.weight']
    torch.testing.assert_close(w.sum((2, 3)), src.sum((2, 3)))


def test_no_matching_keys_is_an_error(tmp_path):
    # A valid dwnet_mm layout, but for a different network: nothing matches.
    path = tmp_path / 'other.pth'
    torch.save({'state_dict': {'backbone.stages.9.foo.weight':
                               torch.zeros(3)}}, path)
    model = DWNet(arch=SMALL, init_cfg=dict(type='Pretrained',
                                            checkpoint=str(path)))
    with pytest.raises(RuntimeError, match='no parameter of the model'):
        model.init_weights()


def test_unknown_layout_is_an_error(tmp_path):
    path = tmp_path / 'resnet.pth'
    torch.save({'state_dict': {'conv1.weight': torch.zeros(3),
                               'layer1.0.bn1.weight': torch.zeros(3)}}, path)
    model = DWNet(arch=SMALL, init_cfg=dict(type='Pretrained',
                                            checkpoint=str(path)))
    with pytest.raises(UnknownCheckpointLayout, match='unknown checkpoint'):
        model.init_weights()


def test_missing_file_is_an_error(tmp_path):
    model = DWNet(arch=SMALL, init_cfg=dict(
        type='Pretrained', checkpoint=str(tmp_path / 'nope.pth')))
    with pytest.raises(FileNotFoundError, match='does not exist'):
        model.init_weights()


def test_shape_mismatch_is_an_error(tmp_path):
    sd = make_state_dict(authors_shapes(SMALL['channels'], SMALL['depths']))
    path = tmp_path / 'authors.pth'
    torch.save({'model': sd}, path)
    model = DWNet(arch=dict(channels=[32, 64, 128, 512], depths=[1, 1, 2, 1]),
                  init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(RuntimeError, match='shape mismatch'):
        model.init_weights()


def test_direct_load_function_reports(tmp_path):
    sd = make_state_dict(authors_shapes(SMALL['channels'], SMALL['depths']))
    path = tmp_path / 'authors.pth'
    torch.save({'model': sd}, path)
    model = DWNet(arch=SMALL, out_type='featmap', out_indices=(0, 1, 2, 3))
    info = load_dwnet_checkpoint(model, str(path))
    assert info['layout'] == 'authors'
    assert info['unexpected_keys'] == []
    assert {k.split('.')[0] for k in info['missing_keys']} == {
        'norm0', 'norm1', 'norm2', 'norm3'}


def test_deprecated_pretrained_argument(tmp_path):
    sd = make_state_dict(authors_shapes(SMALL['channels'], SMALL['depths']))
    path = tmp_path / 'authors.pth'
    torch.save({'model': sd}, path)
    with pytest.warns(UserWarning, match='deprecated'):
        model = DWNet(arch=SMALL, out_type='avg_featmap', out_indices=-1,
                      pretrained=str(path))
    model.init_weights()
    torch.testing.assert_close(model.norm3.bias, sd['norm.bias'])
