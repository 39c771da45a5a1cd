import pytest
import torch

from dwnet_mm.runner_setup import load_config, prepare_train_config


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-only behaviour')
def test_amp_config_trains_in_fp32_without_gpu(repo_root):
    from mmengine.optim import build_optim_wrapper
    cfg = load_config(f'{repo_root}/configs/cls/dwnet-tiny_8xb128_in1k.py')
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    prepare_train_config(cfg, work_dir='unused', amp=True)
    assert cfg.optim_wrapper.type == 'OptimWrapper'
    assert 'loss_scale' not in cfg.optim_wrapper
    # mmengine's AmpOptimWrapper would assert here without a GPU.
    wrapper = build_optim_wrapper(torch.nn.Linear(2, 2), cfg.optim_wrapper)
    assert type(wrapper).__name__ == 'OptimWrapper'
