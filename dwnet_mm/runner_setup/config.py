"""Turn a config plus command-line options into a runnable config."""
import logging
import os.path as osp

import torch
from mmengine.config import Config
from mmengine.logging import print_log

from ..utils.frameworks import FRAMEWORK_EXTRAS, require_framework
from .runtime import CPUDistributedDataParallel


class ConfigError(ValueError):
    """A config or command-line option that cannot run as given."""


def load_config(path, cfg_options=None):
    """Read a config, checking that it and its framework exist.

    Args:
        path (str): Config file.
        cfg_options (dict, optional): Overrides in ``--cfg-options`` form.

    Returns:
        Config: The merged config.
    """
    if not osp.isfile(path):
        raise ConfigError(f'config file {path!r} does not exist; pass a file '
                          'under configs/ (e.g. configs/det/'
                          'cascade_dwnet_tiny_3x.py)')
    scope = _peek_scope(path)
    if scope in FRAMEWORK_EXTRAS:
        require_framework(scope, f'config {osp.basename(path)}')
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def _peek_scope(path):
    """The framework a config needs, read without importing its bases."""
    with open(path, encoding='utf-8') as f:
        text = f.read()
    for scope in FRAMEWORK_EXTRAS:
        if f"'{scope}::" in text or f'"{scope}::' in text or \
                f"default_scope = '{scope}'" in text:
            return scope
    return None


def replace_sync_bn(cfg_node):
    """Replace SyncBN by BN in a (model) config, in place.

    torch's SyncBatchNorm only synchronises CUDA tensors; CPU runs with
    several processes need plain BN.
    """
    if isinstance(cfg_node, dict):
        if cfg_node.get('type') in ('SyncBN', 'MMSyncBN'):
            cfg_node['type'] = 'BN'
        for value in cfg_node.values():
            replace_sync_bn(value)
    elif isinstance(cfg_node, (list, tuple)):
        for value in cfg_node:
            replace_sync_bn(value)
    return cfg_node


def adapt_to_cpu_processes(cfg):
    """Config changes of a multi-process run without GPU (in place).

    SyncBN becomes BN (torch's SyncBatchNorm needs GPU tensors), the
    process group runs on gloo and the model wrapper takes CPU modules
    (:class:`~.runtime.CPUDistributedDataParallel`).

    Args:
        cfg (Config): The config of the run.

    Returns:
        Config: ``cfg`` itself.
    """
    replace_sync_bn(cfg.model)
    env_cfg = cfg.setdefault('env_cfg', {})
    env_cfg.setdefault('dist_cfg', {})['backend'] = 'gloo'
    wrapper = cfg.get('model_wrapper_cfg')
    cpu_wrapper = CPUDistributedDataParallel.__name__
    if wrapper is None:
        cfg.model_wrapper_cfg = dict(type=cpu_wrapper,
                                     broadcast_buffers=False,
                                     find_unused_parameters=cfg.get(
                                         'find_unused_parameters', False))
    elif wrapper.get('type', 'MMDistributedDataParallel') == \
            'MMDistributedDataParallel':
        wrapper['type'] = cpu_wrapper
    return cfg


def _dataset_roots(cfg):
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(key)
        if not loader:
            continue
        dataset = loader.get('dataset', {})
        while isinstance(dataset, dict) and 'dataset' in dataset:
            dataset = dataset['dataset']  # RepeatDataset, ClassBalanced...
        if isinstance(dataset, dict) and dataset.get('data_root'):
            yield key, dataset['data_root']


def check_dataset_paths(cfg, keys=None):
    """Fail early, naming the setting, when a dataset root is missing."""
    for key, root in _dataset_roots(cfg):
        if keys and key not in keys:
            continue
        if '://' not in str(root) and not osp.isdir(root):
            raise ConfigError(
                f'dataset path {root!r} of {key} does not exist; prepare the '
                'dataset there or point to it with --cfg-options '
                f'{key}.dataset.data_root=/path/to/data')


def prepare_train_config(cfg, work_dir=None, config_path=None, resume=None,
                         amp=False, auto_scale_lr=False, launcher='none'):
    """Apply the usual mm training options to ``cfg`` (in place).

    Args:
        cfg (Config): The config.
        work_dir (str, optional): Output folder. Defaults to the config's or
            ``work_dirs/<config name>``.
        config_path (str, optional): For the default work_dir.
        resume (str, optional): 'auto' (latest checkpoint in work_dir) or a
            checkpoint path. Defaults to None (no resume).
        amp (bool): Mixed precision. Defaults to False.
        auto_scale_lr (bool): Scale the lr by the actual total batch size.
            Defaults to False.
        launcher (str): 'none', 'pytorch', 'slurm' or 'mpi'.
            Defaults to 'none'.
    """
    cfg.launcher = launcher
    _set_work_dir(cfg, work_dir, config_path)
    if amp:
        wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if wrapper != 'AmpOptimWrapper':
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if auto_scale_lr:
        if 'auto_scale_lr' not in cfg or \
                'base_batch_size' not in cfg.auto_scale_lr:
            raise ConfigError('--auto-scale-lr needs `auto_scale_lr = dict('
                              'base_batch_size=...)` in the config')
        cfg.auto_scale_lr.enable = True
    if resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif resume:
        if not osp.isfile(resume):
            raise ConfigError(f'checkpoint {resume!r} to resume from does not '
                              'exist')
        cfg.resume = True
        cfg.load_from = resume
    _adapt_to_device(cfg, launcher)
    return cfg


def _set_work_dir(cfg, work_dir, config_path):
    """The given work_dir, else the config's, else work_dirs/<config name>,
    as the frameworks' tools choose it."""
    if work_dir:
        cfg.work_dir = work_dir
    elif not cfg.get('work_dir'):
        name = osp.splitext(osp.basename(config_path or 'run'))[0]
        cfg.work_dir = osp.join('work_dirs', name)


def prepare_test_config(cfg, checkpoint, work_dir=None, config_path=None,
                        tta=False, launcher='none', deploy=False):
    """Apply the usual mm test options to ``cfg`` (in place); ``deploy``
    builds the DWNet backbone in its deploy form."""
    if not osp.isfile(checkpoint) and '://' not in checkpoint:
        raise ConfigError(f'checkpoint {checkpoint!r} does not exist')
    cfg.launcher = launcher
    cfg.load_from = checkpoint
    _set_work_dir(cfg, work_dir, config_path)
    if deploy:
        backbone = cfg.model.get('backbone') or {}
        if not str(backbone.get('type', '')).endswith('DWNet'):
            raise ConfigError(
                '--deploy converts a DWNet backbone, but the model\'s '
                f'backbone is {backbone.get("type")!r}')
        backbone['deploy'] = True
    if tta:
        if not cfg.get('tta_model') or not cfg.get('tta_pipeline'):
            raise ConfigError('--tta needs `tta_model` and `tta_pipeline` in '
                              'the config')
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.model = dict(**cfg.tta_model, module=cfg.model)
    _adapt_to_device(cfg, launcher)
    return cfg


def _adapt_to_device(cfg, launcher):
    if torch.cuda.is_available():
        return
    if launcher != 'none':
        adapt_to_cpu_processes(cfg)
    if cfg.get('optim_wrapper', {}).get('type') == 'AmpOptimWrapper':
        # mmengine's AmpOptimWrapper refuses to start without a GPU.
        print_log('no GPU: training in fp32 instead of mixed precision',
                  'current', logging.WARNING)
        cfg.optim_wrapper.type = 'OptimWrapper'
        for key in ('loss_scale', 'dtype', 'use_fsdp'):
            cfg.optim_wrapper.pop(key, None)
