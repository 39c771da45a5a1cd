"""tools/export/pytorch2onnx.py: classifier and segmentor configs (small
widths), and one clear line for bad input."""
import importlib.util
import os.path as osp
import re
import sys

import pytest
import torch

from dwnet_mm.export import (max_relative_error, onnxruntime_session,
                             run_onnxruntime)
from dwnet_mm.runner_setup import build_model, load_config, load_weights
from test_export_variants import randomize_norms

pytest.importorskip('onnx')
pytest.importorskip('onnxruntime')

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CLS_NAME = 'i-dynamic-dwnet-tiny_8xb128_in1k.py'
SEG_NAME = 'upernet_dynamic_dwnet_tiny_160k_ade20k.py'
SMALL_ARCH = ('arch=dict(_delete_=True, channels=[32, 64, 128, 256], '
              'depths=[1, 1, 2, 1])')
CLS_CONFIG = f"""_base_ = '{REPO}/configs/cls/{CLS_NAME}'
model = dict(backbone=dict({SMALL_ARCH}, i_dynamic_groups=8),
             head=dict(in_channels=256))
"""
# The real segmentation config (pad_to_window, UPerHead's pyramid pooling)
# at small widths.
SEG_CONFIG = f"""_base_ = '{REPO}/configs/seg/{SEG_NAME}'
model = dict(backbone=dict({SMALL_ARCH}),
             decode_head=dict(in_channels=[32, 64, 128, 256], channels=32),
             auxiliary_head=dict(in_channels=128, channels=32))
"""


def load_tool():
    path = osp.join(REPO, 'tools', 'export', 'pytorch2onnx.py')
    spec = importlib.util.spec_from_file_location('_tool_pytorch2onnx', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def tool():
    return load_tool()


def make_case(tool, folder, name, text):
    """A config file and a checkpoint of its model (random BN stats)."""
    config = folder / f'{name}.py'
    config.write_text(text)
    torch.manual_seed(0)
    model = randomize_norms(build_model(load_config(str(config))))
    checkpoint = folder / f'{name}.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, checkpoint)
    return str(config), str(checkpoint)


@pytest.fixture(scope='module')
def cls_case(tool, tmp_path_factory):
    return make_case(tool, tmp_path_factory.mktemp('cls'), 'cls', CLS_CONFIG)


@pytest.fixture(scope='module')
def seg_case(tool, tmp_path_factory):
    return make_case(tool, tmp_path_factory.mktemp('seg'), 'seg', SEG_CONFIG)


def reported_error(stdout):
    match = re.search(r'max relative error vs PyTorch: (\S+)', stdout)
    assert match, stdout
    return float(match.group(1))


def exit_message(tool, argv):
    with pytest.raises(SystemExit) as info:
        tool.main(argv)
    message = info.value.code
    assert isinstance(message, str) and message.startswith('error: '), \
        message
    assert '\n' not in message, message
    return message


def test_classifier(tool, cls_case, tmp_path, capsys):
    out = str(tmp_path / 'cls.onnx')
    tool.main([*cls_case, out, '--shape', '97', '65'])
    assert reported_error(capsys.readouterr().out) < 1e-4
    assert run_onnxruntime(onnxruntime_session(out),
                           torch.randn(3, 3, 64, 64))[0].shape == (3, 1000)


def test_backbone_only(tool, cls_case, tmp_path, capsys):
    out = str(tmp_path / 'backbone.onnx')
    tool.main([*cls_case, out, '--shape', '64', '64', '--backbone-only',
               '--deploy', '--opset', '11'])
    assert 'backbone feature maps' in capsys.readouterr().out
    assert run_onnxruntime(onnxruntime_session(out),
                           torch.randn(2, 3, 64, 64))[0].shape == (2, 256)


def test_segmentor_deploy_form_at_other_sizes(tool, seg_case, tmp_path,
                                              capsys):
    """The segmentor's tensor forward (pad-to-window blocks, pyramid
    pooling of UPerHead) at sizes and batches other than the traced one."""
    out = str(tmp_path / 'seg.onnx')
    tool.main([*seg_case, out, '--shape', '128', '160', '--deploy'])
    assert reported_error(capsys.readouterr().out) < 1e-4
    model = build_model(load_config(seg_case[0]), deploy=True)
    load_weights(model, seg_case[1])
    session = onnxruntime_session(out)
    for shape in ((2, 3, 250, 330), (1, 3, 96, 96)):
        x = torch.randn(*shape)
        with torch.no_grad():
            expected = model(x, mode='tensor')
        assert max_relative_error(run_onnxruntime(session, x),
                                  [expected]) < 1e-4


def test_missing_config(tool, tmp_path):
    message = exit_message(tool, ['nope.py', 'x.pth', str(tmp_path / 'a')])
    assert 'nope.py' in message and 'does not exist' in message


def test_missing_checkpoint(tool, cls_case, tmp_path):
    message = exit_message(
        tool, [cls_case[0], 'missing.pth', str(tmp_path / 'a.onnx')])
    assert "checkpoint 'missing.pth' does not exist" in message


def test_unsupported_config(tool, cls_case, tmp_path):
    config = tmp_path / 'plain.py'
    config.write_text("model = dict(type='DWNet')\n")
    message = exit_message(
        tool, [str(config), cls_case[1], str(tmp_path / 'a.onnx')])
    assert 'unsupported config' in message


def test_checkpoint_of_another_model(tool, cls_case, seg_case, tmp_path):
    message = exit_message(
        tool, [cls_case[0], seg_case[1], str(tmp_path / 'a.onnx')])
    assert 'error: ' in message


def test_bad_opset(tool, cls_case, tmp_path):
    message = exit_message(
        tool, [*cls_case, str(tmp_path / 'a.onnx'), '--opset', '9'])
    assert 'opset' in message


def test_onnxruntime_missing(tool, cls_case, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)
    message = exit_message(tool, [*cls_case, str(tmp_path / 'a.onnx')])
    assert 'pip install "dwnet-mm[export]"' in message
