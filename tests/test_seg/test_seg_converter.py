"""tools/model_converters/dwnet_seg_to_mmseg.py on the authors' layout."""
import pytest
import torch
from mmengine.registry import init_default_scope
from mmengine.utils import import_modules_from_strings
from seg_test_utils import (SMALL_ARCH, SMALL_I_DYNAMIC_GROUPS,
                            TINY_CONFIG_OF, load_authors_layout_helpers,
                            load_seg_config, load_seg_converter,
                            shrink_model_cfg)

authors_shapes, make_state_dict = load_authors_layout_helpers()
converter = load_seg_converter()


def _small_segmentor(conv_type):
    cfg = load_seg_config(TINY_CONFIG_OF[conv_type])
    import_modules_from_strings(**cfg.custom_imports)
    init_default_scope('mmseg')
    from mmseg.registry import MODELS
    return MODELS.build(shrink_model_cfg(cfg.model, conv_type))


def _authors_seg_checkpoint(segmentor, conv_type, seed=0):
    """The authors' mmseg 0.x file: their backbone names, 0.x head names."""
    backbone = make_state_dict(
        authors_shapes(SMALL_ARCH['channels'], SMALL_ARCH['depths'],
                       conv_type, groups=SMALL_I_DYNAMIC_GROUPS, dense=True),
        seed)
    gen = torch.Generator().manual_seed(seed + 1)
    heads = {
        k: torch.randn(v.shape, generator=gen) if v.is_floating_point() else
        v.clone()
        for k, v in segmentor.state_dict().items()
        if not k.startswith('backbone.')
    }
    state_dict = {f'backbone.{k}': v for k, v in backbone.items()}
    state_dict.update(heads)
    meta = dict(CLASSES=('wall', 'building'), PALETTE=[[1, 2, 3], [4, 5, 6]],
                iter=160000, config='# an mmseg 0.x config as text')
    return dict(state_dict=state_dict, meta=meta,
                optimizer=dict(state={}, param_groups=[]))


@pytest.mark.parametrize('conv_type', ['static', 'dynamic', 'i_dynamic'])
def test_converted_checkpoint_loads_strictly(conv_type, tmp_path):
    segmentor = _small_segmentor(conv_type)
    checkpoint = _authors_seg_checkpoint(segmentor, conv_type)
    src, dst = tmp_path / 'authors.pth', tmp_path / 'mmseg.pth'
    torch.save(checkpoint, src)
    converter.main([str(src), str(dst)])

    # Readable by torch's safe loader, as mmengine reads checkpoints.
    converted = torch.load(dst, map_location='cpu', weights_only=True)
    assert set(converted) == {'state_dict', 'meta'}
    assert converted['meta']['dataset_meta'] == dict(
        classes=('wall', 'building'), palette=[[1, 2, 3], [4, 5, 6]])
    assert converted['meta']['source_iter'] == 160000
    segmentor.load_state_dict(converted['state_dict'], strict=True)

    src_sd = checkpoint['state_dict']
    own = segmentor.state_dict()
    assert len(own) == len(src_sd)
    # Renamed backbone tensors, value by value.
    pairs = {
        'backbone.patch_embed.projection.weight':
        'backbone.patch_embed.proj.weight',
        'backbone.stages.1.blocks.0.mixer.pointwise_in.conv.weight':
        'backbone.layers.1.blocks.0.attn2conv.conv0.weight',
        'backbone.stages.2.blocks.0.mixer.depthwise.norm.running_var':
        'backbone.layers.2.blocks.0.attn2conv.bn.running_var',
        'backbone.stages.3.blocks.0.norm.weight':
        'backbone.layers.3.blocks.0.bn.weight',
        'backbone.stages.0.downsample.reduction.weight':
        'backbone.layers.0.downsample.reduction.weight',
        'backbone.norm2.running_mean': 'backbone.norm2.running_mean',
    }
    if conv_type == 'static':
        pairs['backbone.stages.0.blocks.0.mixer.depthwise.conv.weight'] = \
            'backbone.layers.0.blocks.0.attn2conv.conv.weight'
    elif conv_type == 'dynamic':
        pairs['backbone.stages.0.blocks.0.mixer.depthwise.conv.conv2.weight'
              ] = 'backbone.layers.0.blocks.0.attn2conv.conv.conv2.weight'
    else:
        pairs['backbone.stages.0.blocks.0.mixer.depthwise.conv.conv2.0.bias'
              ] = 'backbone.layers.0.blocks.0.attn2conv.conv.conv2.0.bias'
    for ours, theirs in pairs.items():
        torch.testing.assert_close(own[ours], src_sd[theirs])
    # mmseg 0.x and 1.x name the UPerNet and FCN heads alike.
    for key in ('decode_head.fpn_bottleneck.conv.weight',
                'decode_head.psp_modules.3.1.bn.running_var',
                'decode_head.conv_seg.bias',
                'auxiliary_head.convs.0.conv.weight'):
        torch.testing.assert_close(own[key], src_sd[key])


def test_wrapper_prefix_is_stripped():
    segmentor = _small_segmentor('static')
    checkpoint = _authors_seg_checkpoint(segmentor, 'static')
    wrapped = {f'module.{k}': v for k, v in checkpoint['state_dict'].items()}
    converted = converter.convert_seg_checkpoint(dict(state_dict=wrapped))
    segmentor.load_state_dict(converted['state_dict'], strict=True)


def test_dwnet_mm_checkpoint_is_refused():
    segmentor = _small_segmentor('static')
    with pytest.raises(ValueError, match='already in dwnet_mm layout'):
        converter.convert_seg_checkpoint(
            dict(state_dict=segmentor.state_dict()))


def test_classification_checkpoint_is_refused():
    shapes = authors_shapes(SMALL_ARCH['channels'], SMALL_ARCH['depths'])
    state_dict = {
        f'backbone.{k}': v
        for k, v in make_state_dict(shapes).items()
    }
    with pytest.raises(ValueError, match='classification checkpoint'):
        converter.convert_seg_checkpoint(dict(state_dict=state_dict))


def test_not_a_segmentor_is_refused(tmp_path):
    path = tmp_path / 'resnet.pth'
    torch.save({'state_dict': {'conv1.weight': torch.zeros(3)}}, path)
    with pytest.raises(SystemExit, match='no "backbone." key'):
        converter.main([str(path), str(tmp_path / 'out.pth')])
