from .config import (ConfigError, check_dataset_paths, load_config,
                     prepare_test_config, prepare_train_config,
                     replace_sync_bn)

__all__ = [
    'ConfigError', 'check_dataset_paths', 'load_config',
    'prepare_test_config', 'prepare_train_config', 'replace_sync_bn'
]
