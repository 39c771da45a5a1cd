"""Helpers of the recipe tests: the real configs, parsed once, and the
authors' names of a built model's parameters."""
import contextlib
import copy
import functools
import glob
import os.path as osp

import torch
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope
from mmengine.utils import import_modules_from_strings
from reference.backbone import reference_backbone_cfg
from reference.weights import reference_key_to_dwnet_mm

from dwnet_mm.converters.authors import convert_authors_key

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG_DIR = osp.join(REPO, 'configs')


def _configs(task, pattern):
    return sorted(
        osp.relpath(p, CONFIG_DIR)
        for p in glob.glob(osp.join(CONFIG_DIR, task, pattern)))


# The paper's configs (not the demo_*, deploy or ablation ones).
DET_CONFIGS = _configs('det', 'cascade_*.py')
SEG_CONFIGS = _configs('seg', 'upernet_*.py')
CLS_CONFIGS = _configs('cls', '*dwnet-*_in1k*.py')
CLS_224_CONFIGS = [c for c in CLS_CONFIGS if not c.endswith('-384px.py')]
CLS_384_CONFIGS = [c for c in CLS_CONFIGS if c.endswith('-384px.py')]


# mmengine resolves every 'mmdet::' / 'mmseg::' / 'mmpretrain::' base anew,
# reloading pkg_resources and the frameworks' metafiles each time (seconds
# per config); the resolved paths do not change within a test session.
_cached_cfg_path = functools.lru_cache(maxsize=None)(Config._get_cfg_path)


@functools.lru_cache(maxsize=None)
def _parse(name):
    resolve = Config._get_cfg_path
    Config._get_cfg_path = staticmethod(_cached_cfg_path)
    try:
        return Config.fromfile(osp.join(CONFIG_DIR, name))
    finally:
        Config._get_cfg_path = staticmethod(resolve)


def load(name):
    """A fresh copy of a config under configs/ (parsed once: resolving the
    frameworks' ``::`` bases takes a while)."""
    return copy.deepcopy(_parse(name))


@contextlib.contextmanager
def _no_random_init():
    """Module constructors' default random init left out (most of the time
    of building a model on the CPU): parameter values do not decide which
    optimizer group a parameter joins."""
    names = ('uniform_', 'normal_')
    assert not any(name in torch.Tensor.__dict__ for name in names)
    for name in names:
        setattr(torch.Tensor, name, lambda self, *args, **kwargs: self)
    try:
        yield
    finally:
        for name in names:
            delattr(torch.Tensor, name)


def build_model(cfg):
    """The config's model, with uninitialised parameter values."""
    import_modules_from_strings(**cfg.custom_imports)
    init_default_scope(cfg.default_scope)
    with _no_random_init():
        return MODELS.build(cfg.model)


def cpu_optim_wrapper_cfg(cfg):
    """The config's optim_wrapper, runnable without a GPU: mmengine's
    AmpOptimWrapper refuses to start without one, and it builds its
    parameter groups with the same constructor as OptimWrapper."""
    wrapper = copy.deepcopy(cfg.optim_wrapper)
    if wrapper.get('type') == 'AmpOptimWrapper':
        wrapper.type = 'OptimWrapper'
        wrapper.pop('loss_scale', None)
    return wrapper


def authors_backbone_params(backbone_cfg):
    """{dwnet_mm name: (the authors' name, the authors' ndim)} for every
    parameter of the DWNet that ``backbone_cfg`` describes.

    The names come from the independent reference (tests/reference: the
    authors' module layout and its key map, written from REFERENCE.md
    section 5); dwnet_mm's converter must map each authors' name to the
    same dwnet_mm name.
    """
    cfg = reference_backbone_cfg(dict(backbone_cfg))
    with torch.device('meta'):
        reference = MODELS.build(cfg)
    num_stages = len(reference.layers)
    params = {}
    for name, param in reference.named_parameters():
        ours = reference_key_to_dwnet_mm(name, last_stage=num_stages - 1)
        converted = convert_authors_key(name, num_stages)
        assert converted == ours, (
            f'key maps disagree on {name}: reference {ours}, '
            f'dwnet_mm.converters {converted}')
        params[ours] = (name, param.ndim)
    return params


def authors_names(model, backbone_cfg, classifier=False):
    """{name: (the authors' name, the authors' ndim)} for every parameter of
    a built detector, segmentor or classifier.

    Outside the backbone the names are the frameworks' own, which the
    authors' mmdet 2.x / mmseg 0.x models share; a classifier's head is the
    authors' ``head`` Linear (mmpretrain's ``head.fc``).
    """
    backbone = authors_backbone_params(backbone_cfg)
    ours = {n: p for n, p in model.named_parameters()}
    ours_backbone = {n[len('backbone.'):] for n in ours
                     if n.startswith('backbone.')}
    assert ours_backbone == set(backbone), (
        'the model\'s backbone parameters are not the reference\'s: only '
        f'ours {sorted(ours_backbone - set(backbone))[:5]}, only the '
        f'reference\'s {sorted(set(backbone) - ours_backbone)[:5]}')
    names = {}
    for name, param in ours.items():
        if name.startswith('backbone.'):
            authors, ndim = backbone[name[len('backbone.'):]]
            # The authors' classifier is one model (no "backbone.").
            names[name] = (authors if classifier else 'backbone.' + authors,
                           ndim)
        elif classifier:
            assert name.startswith('head.fc.'), name
            names[name] = ('head.' + name[len('head.fc.'):], param.ndim)
        else:
            names[name] = (name, param.ndim)
    return names


def zero_decay_names(model, optim_wrapper):
    """Names of the parameters that an optim wrapper updates without weight
    decay, and of all it updates."""
    names = {id(p): n for n, p in model.named_parameters()}
    zero, every = set(), set()
    for group in optim_wrapper.optimizer.param_groups:
        for param in group['params']:
            every.add(names[id(param)])
            if group['weight_decay'] == 0:
                zero.add(names[id(param)])
    return zero, every
