"""The deploy configs (configs/cls/deploy) and the reparameterize tool:
a training checkpoint, given to the deploy config directly or folded once
by the tool, gives the training model's logits."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from torch.nn.modules.batchnorm import _BatchNorm

from cls_data import CLS_CONFIG_DIR, load_module
from dwnet_mm.runner_setup import load_config
from dwnet_mm.runner_setup import build_model

DEPLOY_DIR = osp.join(CLS_CONFIG_DIR, 'deploy')
DEPLOY_CONFIGS = sorted(
    osp.basename(p) for p in glob.glob(osp.join(DEPLOY_DIR, '*.py')))
# A small architecture: the tool and the configs do not depend on its size.
SMALL = dict(arch=dict(channels=[32, 64, 128, 256], depths=[1, 1, 2, 1]))


def base_config(name):
    return name.replace('_deploy_in1k.py', {
        'tiny': '_8xb128_in1k.py', 'base': '_16xb64_in1k.py'
    }['tiny' if 'tiny' in name else 'base'])


def test_one_deploy_config_per_imagenet_recipe():
    assert DEPLOY_CONFIGS == sorted(
        f'{prefix}-{arch}_deploy_in1k.py'
        for prefix in ('dwnet', 'dynamic-dwnet', 'i-dynamic-dwnet')
        for arch in ('tiny', 'base'))


@pytest.mark.parametrize('name', DEPLOY_CONFIGS)
def test_deploy_config_is_its_recipe_with_deploy_on(name):
    deploy = Config.fromfile(osp.join(DEPLOY_DIR, name)).to_dict()
    base = Config.fromfile(osp.join(CLS_CONFIG_DIR, base_config(name)))
    base = base.to_dict()
    assert deploy['model']['backbone'].pop('deploy') is True
    assert deploy == base


def small_config(name, head_channels=256):
    cfg = load_config(osp.join(DEPLOY_DIR, name))
    cfg.model.backbone.update(SMALL)
    cfg.model.head.in_channels = head_channels
    return cfg


def random_norms_(model, seed=0):
    generator = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features,
                                             generator=generator) * 0.3)
            m.running_var.copy_(torch.rand(m.num_features,
                                           generator=generator) + 0.5)
    return model


@pytest.mark.parametrize('name', [n for n in DEPLOY_CONFIGS if 'tiny' in n])
def test_training_checkpoint_through_config_and_tool(name, tmp_path):
    train_cfg = small_config(name)
    train_cfg.model.backbone.deploy = False
    model = random_norms_(build_model(train_cfg))
    checkpoint = str(tmp_path / 'trained.pth')
    torch.save({'state_dict': model.state_dict()}, checkpoint)
    x = torch.randn(2, 3, 97, 75)
    with torch.no_grad():
        expected = model(x, mode='tensor')

    # The deploy config takes the training checkpoint: folded on loading.
    deployed = build_model(small_config(name), deploy=True)
    assert deployed.backbone.deploy
    assert not any(isinstance(m, _BatchNorm) for m in deployed.modules())
    deployed.load_state_dict(torch.load(checkpoint)['state_dict'])
    with torch.no_grad():
        torch.testing.assert_close(deployed(x, mode='tensor'), expected,
                                   rtol=1e-4, atol=1e-4)

    # The tool writes the folded weights once; they load as they are.
    tool = load_module('tools/model_converters/reparameterize.py',
                       '_dwnet_reparameterize')
    config = str(tmp_path / 'small_train.py')
    train_cfg.dump(config)
    out = str(tmp_path / 'deployed.pth')
    saved = tool.reparameterize(config, checkpoint, out)
    assert saved['meta']['deploy'] is True
    assert not any('.mixer.' in k for k in saved['state_dict'])
    again = build_model(small_config(name), deploy=True)
    again.load_state_dict(torch.load(out)['state_dict'], strict=True)
    with torch.no_grad():
        torch.testing.assert_close(again(x, mode='tensor'), expected,
                                   rtol=1e-4, atol=1e-4)


def test_tool_refuses_to_overwrite_its_input(tmp_path, capsys):
    tool = load_module('tools/model_converters/reparameterize.py',
                       '_dwnet_reparameterize')
    path = str(tmp_path / 'a.pth')
    with pytest.raises(SystemExit) as exit_info:
        tool.main([osp.join(CLS_CONFIG_DIR, 'dwnet-tiny_8xb128_in1k.py'),
                   path, path])
    assert 'OUT must differ from CHECKPOINT' in str(exit_info.value)
