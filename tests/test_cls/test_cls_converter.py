"""tools/model_converters/dwnet_to_mmpretrain.py on the authors' layout."""
import subprocess
import sys
import types

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint

from cls_data import (CLS_CONFIG_DIR, REPO_ROOT, authors_checkpoint_helpers,
                      converter_tool)

SMALL_ARCH = dict(channels=[32, 64, 128, 256], depths=[1, 1, 2, 1])
NUM_CLASSES = 10
CONFIGS = {
    'static': 'dwnet-tiny_8xb128_in1k.py',
    'dynamic': 'dynamic-dwnet-tiny_8xb128_in1k.py',
    'i_dynamic': 'i-dynamic-dwnet-base_16xb64_in1k.py',
}


def authors_state_dict(conv_type='static', **kwargs):
    helpers = authors_checkpoint_helpers()
    return helpers.make_state_dict(
        helpers.authors_shapes(SMALL_ARCH['channels'], SMALL_ARCH['depths'],
                               conv_type, classes=NUM_CLASSES, **kwargs))


def build_classifier(config):
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    cfg = Config.fromfile(f'{CLS_CONFIG_DIR}/{config}')
    cfg.model.backbone.arch = SMALL_ARCH
    cfg.model.head.in_channels = SMALL_ARCH['channels'][-1]
    cfg.model.head.num_classes = NUM_CLASSES
    return MODELS.build(cfg.model)


class FakeConfig(dict):
    """Stands for the yacs config pickled in the authors' files: a dict,
    pickled as ``yacs.config.CfgNode`` (a known harmless class)."""

    def __init__(self):
        super().__init__(MODEL={'TYPE': 'dwnet'})
        self.__dict__['__immutable__'] = False


FakeConfig.__module__ = 'yacs.config'
FakeConfig.__name__ = FakeConfig.__qualname__ = 'CfgNode'


def test_cli(tmp_path, monkeypatch):
    authors = authors_state_dict()
    src, dst = tmp_path / 'authors.pth', tmp_path / 'out' / 'converted.pth'
    yacs = types.ModuleType('yacs')
    yacs.config = types.ModuleType('yacs.config')
    yacs.config.CfgNode = FakeConfig
    with monkeypatch.context() as patch:  # yacs exists only while saving
        patch.setitem(sys.modules, 'yacs', yacs)
        patch.setitem(sys.modules, 'yacs.config', yacs.config)
        torch.save({'model': authors, 'optimizer': {}, 'epoch': 299,
                    'config': FakeConfig()}, src)
    proc = subprocess.run(
        [sys.executable, 'tools/model_converters/dwnet_to_mmpretrain.py',
         str(src), str(dst)], cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "conv_type='static' kernel_size=7" in proc.stdout
    # A plain safe load: only tensors and plain Python in the file.
    converted = torch.load(dst, map_location='cpu', weights_only=True)
    assert converted['meta']['converted_from'] == 'authors.pth'
    torch.testing.assert_close(converted['state_dict']['head.fc.weight'],
                               authors['head.weight'])


@pytest.mark.parametrize('conv_type', ['static', 'dynamic', 'i_dynamic'])
def test_converted_file_loads_into_classifier(conv_type, tmp_path):
    authors = authors_state_dict(conv_type)
    src, dst = tmp_path / 'authors.pth', tmp_path / 'converted.pth'
    torch.save({'model': authors}, src)
    tool = converter_tool()
    converted = tool.convert(tool.load_checkpoint_file(str(src)))
    torch.save(converted, dst)

    arch = converted['meta']['arch']
    assert arch['channels'] == SMALL_ARCH['channels']
    assert arch['depths'] == SMALL_ARCH['depths']
    assert arch['conv_type'] == conv_type
    assert arch['num_classes'] == NUM_CLASSES
    assert len(converted['state_dict']) == len(authors)
    model = build_classifier(CONFIGS[conv_type])
    # strict: every classifier tensor is in the file and nothing else.
    load_checkpoint(model, str(dst), strict=True)
    state = model.state_dict()
    torch.testing.assert_close(state['head.fc.weight'], authors['head.weight'])
    torch.testing.assert_close(state['head.fc.bias'], authors['head.bias'])
    torch.testing.assert_close(state['backbone.norm3.weight'],
                               authors['norm.weight'])
    torch.testing.assert_close(
        state['backbone.stages.2.blocks.1.mixer.pointwise_out.bn.'
              'running_mean'],
        authors['layers.2.blocks.1.attn2conv.bn2.running_mean'])
    # The backbone equals what the backbone's own loader makes of the
    # authors' file.
    from dwnet_mm.converters import load_dwnet_checkpoint
    reference = build_classifier(CONFIGS[conv_type])
    load_dwnet_checkpoint(reference.backbone, str(src))
    for key, value in reference.backbone.state_dict().items():
        torch.testing.assert_close(state[f'backbone.{key}'], value)


def test_kernel_size_is_reported():
    tool = converter_tool()
    converted = tool.convert({'model': authors_state_dict(k=5)})
    assert converted['meta']['arch']['kernel_size'] == 5
    converted = tool.convert(
        {'model': authors_state_dict('dynamic', k=3)})
    assert converted['meta']['arch']['kernel_size'] == 3


def test_module_prefix_and_bare_state_dict():
    tool = converter_tool()
    authors = authors_state_dict()
    wrapped = tool.convert({'model': {f'module.{k}': v
                                      for k, v in authors.items()}})
    bare = tool.convert(authors)
    assert list(wrapped['state_dict']) == list(bare['state_dict'])


def test_unknown_layouts_are_errors():
    tool = converter_tool()
    with pytest.raises(ValueError, match='unknown checkpoint layout'):
        tool.convert({'state_dict': {'conv1.weight': torch.zeros(1)}})
    with pytest.raises(ValueError, match='unknown checkpoint layout'):
        tool.convert([torch.zeros(1)])
    with pytest.raises(ValueError, match='already in dwnet_mm'):
        tool.convert({'state_dict': {
            'backbone.stages.0.blocks.0.norm.weight': torch.zeros(1)}})
    helpers = authors_checkpoint_helpers()
    dense = helpers.make_state_dict(
        helpers.authors_shapes(SMALL_ARCH['channels'], SMALL_ARCH['depths'],
                               dense=True))
    with pytest.raises(ValueError, match='detection/segmentation release'):
        tool.convert({'state_dict': {f'backbone.{k}': v
                                     for k, v in dense.items()}})
    no_head = {k: v for k, v in authors_state_dict().items()
               if not k.startswith('head.')}
    with pytest.raises(ValueError, match='no classifier'):
        tool.convert({'model': no_head})


def test_cli_missing_file(tmp_path, monkeypatch):
    tool = converter_tool()
    monkeypatch.setattr(sys, 'argv', [
        'dwnet_to_mmpretrain.py',
        str(tmp_path / 'nope.pth'),
        str(tmp_path / 'out.pth')
    ])
    with pytest.raises(FileNotFoundError, match='does not exist'):
        tool.main()
