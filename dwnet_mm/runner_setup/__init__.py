"""What the tools (train, test, demo, export) share: loading and preparing
configs, and CPU process groups for the launchers."""
from .config import (ConfigError, adapt_to_cpu_processes,
                     check_dataset_paths, load_config, prepare_test_config,
                     prepare_train_config, replace_sync_bn)
from .model_building import build_model, load_weights
from .runtime import (CPUDistributedDataParallel, exit_on_unknown_type,
                      init_cpu_distributed, unknown_type_message)

__all__ = [
    'ConfigError', 'check_dataset_paths', 'load_config',
    'prepare_test_config', 'prepare_train_config', 'replace_sync_bn',
    'CPUDistributedDataParallel', 'adapt_to_cpu_processes',
    'exit_on_unknown_type', 'init_cpu_distributed', 'unknown_type_message',
    'build_model', 'load_weights'
]
