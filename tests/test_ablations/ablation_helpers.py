"""Helpers of the ablation tests: configs, small models, a training step."""
import glob
import os.path as osp

import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
ABLATION_CONFIG_DIR = osp.join(REPO_ROOT, 'configs', 'cls', 'ablations')
ABLATION_CONFIGS = sorted(
    osp.basename(p) for p in glob.glob(osp.join(ABLATION_CONFIG_DIR, '*.py')))

# Small archs for the training-step tests; the full-size models are built
# by the params/FLOPs tests. The DWNet channels split into Swin-T's heads
# (3, 6, 12, 24), as dw_weight_groups needs. Swin has two blocks per stage
# so that stages 1-3 have a shifted block (the shift mask).
SMALL_DWNET = dict(channels=[24, 48, 96, 192], depths=[1, 1, 1, 1])
SMALL_SWIN = dict(embed_dims=24, depths=[2, 2, 2, 2], num_heads=[3, 6, 12, 24])


def load_config(name):
    return Config.fromfile(osp.join(ABLATION_CONFIG_DIR, name))


def build_model(cfg_model, data_preprocessor=None):
    """Build a classifier config in the mmpretrain scope, as a Runner
    does (the config's data preprocessor goes into the model)."""
    from mmpretrain.registry import MODELS

    import dwnet_mm  # noqa: F401
    cfg_model = cfg_model.copy()
    if data_preprocessor is not None:
        cfg_model.setdefault('data_preprocessor', data_preprocessor)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg_model)
    model.init_weights()
    return model


def small_model(name):
    """The model of an ablation config with a small arch, and its config."""
    cfg = load_config(name)
    backbone = cfg.model.backbone
    if name.startswith('dwnet'):
        backbone.arch = SMALL_DWNET
    else:
        backbone.arch = SMALL_SWIN
    cfg.model.head.in_channels = 192
    return build_model(cfg.model, cfg.data_preprocessor), cfg


def train_step(model, cfg, size, batch=2):
    """One training step with the config's optimizer and parameter-wise
    settings (plain OptimWrapper: AMP needs a GPU) on random images.

    Returns:
        dict: The step's log variables.
    """
    from mmengine.optim import build_optim_wrapper
    from mmpretrain.structures import DataSample
    optim_cfg = cfg.optim_wrapper.copy()
    optim_cfg['type'] = 'OptimWrapper'
    optim_cfg.pop('loss_scale', None)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        optim_wrapper = build_optim_wrapper(model, optim_cfg)
    generator = torch.Generator().manual_seed(0)
    data = dict(
        inputs=[
            torch.randint(0, 256, (3, size, size), dtype=torch.uint8,
                          generator=generator) for _ in range(batch)
        ],
        data_samples=[DataSample().set_gt_label(i) for i in range(batch)])
    model.train()
    return model.train_step(data, optim_wrapper)
