from ..utils.model_index import model_index_path, register_model_index
from .config import (ConfigError, adapt_to_cpu_processes,
                     check_dataset_paths, load_config, prepare_test_config,
                     prepare_train_config, replace_sync_bn)
from .runtime import (CPUDistributedDataParallel, exit_on_unknown_type,
                      init_cpu_distributed, unknown_type_message)

__all__ = [
    'ConfigError', 'check_dataset_paths', 'load_config',
    'prepare_test_config', 'prepare_train_config', 'replace_sync_bn',
    'CPUDistributedDataParallel', 'adapt_to_cpu_processes',
    'exit_on_unknown_type', 'init_cpu_distributed', 'unknown_type_message',
    'model_index_path', 'register_model_index'
]
