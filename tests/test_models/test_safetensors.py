"""Weights in a format that cannot run code: the converters write
``.safetensors``, and every reader takes it (the Pretrained init_cfg,
mmengine's loaders as tools/test.py uses them, the converters)."""
import json
import os.path as osp
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from dwnet_mm.converters import load_dwnet_checkpoint
from dwnet_mm.models import DWNet
from dwnet_mm.safe_loading import checkpoint_loading, safe_load
from test_checkpoint_loading import (SMALL, authors_shapes, make_state_dict,
                                     save_with_config)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(REPO, 'tests', 'test_tools'))
from tools_helpers import load_tool  # noqa: E402


def authors_file(tmp_path, monkeypatch):
    path = tmp_path / 'dwnet_tiny_224.pth'
    save_with_config(dict(model=make_state_dict(authors_shapes(
        SMALL['channels'], SMALL['depths'], classes=10))), path, monkeypatch)
    return str(path)


def test_converter_writes_safetensors_that_load_everywhere(
        tmp_path, monkeypatch):
    src = authors_file(tmp_path, monkeypatch)
    pth, shared = str(tmp_path / 'cls.pth'), str(tmp_path / 'cls.safetensors')
    tool = load_tool('tools/model_converters/dwnet_to_mmpretrain.py')
    tool.main([src, pth])
    tool.main([src, shared])
    expected = torch.load(pth, weights_only=True)
    tensors = load_file(shared)
    assert set(tensors) == set(expected['state_dict'])
    for key, value in expected['state_dict'].items():
        assert torch.equal(tensors[key], value), key
    with safe_open(shared, 'pt') as f:  # the meta travels as JSON
        assert json.loads(f.metadata()['meta']) == expected['meta']
    # safe_load reads it without unpickling anything.
    assert set(safe_load(shared)) == set(tensors)
    # The Pretrained init_cfg, and mmengine's loader inside
    # checkpoint_loading (tools/test.py, load_from, resume).
    model = DWNet(arch=SMALL, init_cfg=dict(type='Pretrained',
                                            checkpoint=shared,
                                            prefix='backbone.'))
    model.init_weights()
    reference = DWNet(arch=SMALL)
    load_dwnet_checkpoint(reference, pth)
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    from mmengine.runner import load_checkpoint
    with checkpoint_loading():
        loaded = load_checkpoint(torch.nn.Module(), shared, strict=False)
    assert set(loaded) == set(tensors)
