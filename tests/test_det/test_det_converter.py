"""tools/model_converters/dwnet_det_to_mmdet.py on the authors' mmdet 2.x
Cascade Mask R-CNN layout."""
import pytest
import torch
from det_test_utils import (SMALL_ARCH, SMALL_FC, SMALL_FPN, TINY_CONFIG_OF,
                            load_authors_layout_helpers, load_det_classes,
                            load_det_config, load_det_converter,
                            make_authors_det_checkpoint,
                            mmdet2_cascade_head_shapes, shrink_model_cfg)

from dwnet_mm.utils.complexity_det import build_detector


@pytest.fixture(scope='module')
def converter():
    return load_det_converter()


def _small_config_file(tmp_path, conv_type='static'):
    cfg = load_det_config(TINY_CONFIG_OF[conv_type])
    shrink_model_cfg(cfg.model, conv_type)
    path = tmp_path / f'small_{conv_type}.py'
    cfg.dump(str(path))
    return str(path)


@pytest.mark.parametrize('conv_type', ['static', 'dynamic'])
def test_converts_authors_checkpoint(conv_type, converter, tmp_path):
    src, dst = tmp_path / 'authors.pth', tmp_path / 'converted.pth'
    state = make_authors_det_checkpoint(src, conv_type)
    config = _small_config_file(tmp_path, conv_type)
    converter.main([str(src), str(dst), '--config', config])

    converted = torch.load(dst, weights_only=True)
    new = converted['state_dict']
    assert set(converted) == {'state_dict', 'meta'}
    assert converted['meta']['dataset_meta'] == dict(
        classes=tuple(load_det_classes()))
    assert converted['meta']['source_epoch'] == 36

    # Loads strictly into the mmdet 3.x detector of the config.
    detector = build_detector(config)
    detector.load_state_dict(new, strict=True)
    assert len(new) == len(state)

    # Backbone keys renamed, value by value.
    p, q = 'backbone.layers.1.blocks.0', 'backbone.stages.1.blocks.0'
    renamed = {
        f'{p}.attn2conv.conv0.weight': f'{q}.mixer.pointwise_in.conv.weight',
        f'{p}.attn2conv.bn2.running_var':
        f'{q}.mixer.pointwise_out.bn.running_var',
        f'{p}.bn.bias': f'{q}.norm.bias',
        'backbone.patch_embed.proj.weight':
        'backbone.patch_embed.projection.weight',
        'backbone.layers.2.downsample.reduction.weight':
        'backbone.stages.2.downsample.reduction.weight',
        'backbone.norm3.running_mean': 'backbone.norm3.running_mean',
    }
    if conv_type == 'static':
        renamed[
            f'{p}.attn2conv.conv.weight'] = f'{q}.mixer.depthwise.conv.weight'
    else:
        renamed[f'{p}.attn2conv.conv.conv2.bias'] = \
            f'{q}.mixer.depthwise.conv.conv2.bias'
    for old, new_key in renamed.items():
        torch.testing.assert_close(new[new_key], state[old])
    # Every other key passes through unchanged: mmdet 3.x kept the 2.x
    # names of the FPN, RPN, box and mask heads.
    heads = mmdet2_cascade_head_shapes(SMALL_ARCH['channels'], SMALL_FPN,
                                       SMALL_FC)
    for key in heads:
        torch.testing.assert_close(new[key], state[key])
    assert {k for k in new if not k.startswith('backbone.')} == set(heads)


def test_wrapper_prefix_is_stripped(converter, tmp_path):
    src = tmp_path / 'authors.pth'
    state = make_authors_det_checkpoint(src)
    wrapped = {f'module.{k}': v for k, v in state.items()}
    out = converter.convert_det_checkpoint({'state_dict': wrapped})
    assert 'backbone.stages.0.blocks.0.mlp.fc1.weight' in out['state_dict']
    assert 'neck.fpn_convs.0.conv.weight' in out['state_dict']


def test_rejects_classification_checkpoint(converter, tmp_path):
    authors_shapes, make_state_dict = load_authors_layout_helpers()
    src = tmp_path / 'cls.pth'
    torch.save({'model': make_state_dict(
        authors_shapes(SMALL_ARCH['channels'], SMALL_ARCH['depths']))}, src)
    with pytest.raises(SystemExit, match='no "backbone." key'):
        converter.main([str(src), str(tmp_path / 'out.pth')])


def test_rejects_converted_checkpoint(converter, tmp_path):
    src, dst = tmp_path / 'authors.pth', tmp_path / 'converted.pth'
    make_authors_det_checkpoint(src)
    converter.main([str(src), str(dst)])
    with pytest.raises(SystemExit, match='already in dwnet_mm layout'):
        converter.main([str(dst), str(tmp_path / 'again.pth')])


def test_config_mismatch_is_an_error(converter, tmp_path):
    """A shrunken checkpoint checked against the full-size tiny config."""
    src, dst = tmp_path / 'authors.pth', tmp_path / 'converted.pth'
    make_authors_det_checkpoint(src)
    config = load_det_config(TINY_CONFIG_OF['static']).filename
    with pytest.raises(SystemExit, match='shape mismatch') as error:
        converter.main([str(src), str(dst), '--config', config])
    # Widths 16.. vs 96.., one block per stage vs 2, 2, 6, 2.
    assert 'backbone.norm0.weight: checkpoint (16,) vs model (96,)' in str(
        error.value)
    assert 'missing' in str(error.value)
    assert not dst.exists()
