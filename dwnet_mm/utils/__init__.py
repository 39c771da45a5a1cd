from .frameworks import (MissingFrameworkError, available_frameworks,
                         require_framework)
from .torch_compat import allow_mmengine_checkpoints

__all__ = [
    'MissingFrameworkError', 'available_frameworks', 'require_framework',
    'allow_mmengine_checkpoints'
]
