"""Precision, batch layout, accumulation and clipping read back from every
real config, against the authors' runs (REFERENCE.md section 4)."""
import os.path as osp
import re

import pytest
from recipes import CLS_CONFIGS, DET_CONFIGS, SEG_CONFIGS, load

# precision, GPUs, images per GPU, accumulation, gradient clip (max norm)
AUTHORS = {
    # Tiny: apex O1 at 8 x 128; I-Dynamic-T: fp32, 8 x 64 x 2, clipped after
    # each micro-batch; base: fp32 at 16 x 64.
    'dwnet-tiny': ('amp', 8, 128, 1, 5.0),
    'dynamic-dwnet-tiny': ('amp', 8, 128, 1, 5.0),
    'i-dynamic-dwnet-tiny': ('fp32', 8, 64, 2, 5.0),
    'dwnet-base': ('fp32', 16, 64, 1, 5.0),
    'dynamic-dwnet-base': ('fp32', 16, 64, 1, 5.0),
    'i-dynamic-dwnet-base': ('fp32', 16, 64, 1, 5.0),
    # mmdet 2.x: fp16 optimizer hook, no clipping; mmseg 0.x: fp32, none.
    'cascade': ('amp', 8, 2, 1, None),
    'upernet': ('fp32', 8, 2, 1, None),
}
WRAPPERS = {
    # precision, accumulation > 1 -> the optim wrapper that runs it
    ('amp', False): 'AmpOptimWrapper',
    ('fp32', False): 'OptimWrapper',
    # all-reduce and clip after every micro-batch, as the authors' trainer
    ('fp32', True): 'MicroBatchClipOptimWrapper',
}


def _authors(name):
    base = osp.basename(name)
    if base.startswith(('cascade', 'upernet')):
        return AUTHORS[base.split('_')[0]]
    return AUTHORS[base.split('_')[0].replace('-k12', '')]


@pytest.mark.parametrize('name', CLS_CONFIGS + DET_CONFIGS + SEG_CONFIGS)
def test_layout_precision_clipping(name):
    precision, gpus, batch, accumulation, clip = _authors(name)
    cfg = load(name)
    wrapper = cfg.optim_wrapper
    assert wrapper.get('type', 'OptimWrapper') == WRAPPERS[(precision,
                                                            accumulation > 1)]
    assert wrapper.get('accumulative_counts', 1) == accumulation
    assert cfg.train_dataloader.batch_size == batch
    if clip is None:
        assert wrapper.get('clip_grad') is None
    else:
        assert wrapper.clip_grad == dict(max_norm=clip)
    if name.startswith('cls/'):
        # The name gives GPUs x images per GPU and update.
        named_gpus, named_batch = map(
            int, re.search(r'_(\d+)xb(\d+)_', name).groups())
        assert (named_gpus, named_batch) == (gpus, batch * accumulation)
        # The lr always follows the images per update (1e-3 at 1024).
        assert cfg.auto_scale_lr.enable is True
        assert cfg.auto_scale_lr.base_batch_size * accumulation == 1024
        assert cfg.train_dataloader.drop_last is True
    else:
        assert cfg.auto_scale_lr.enable is False
        assert cfg.auto_scale_lr.base_batch_size == gpus * batch
