from .flop_handles import (DWNET_FLOP_HANDLES, flop_analyzer,
                           register_flop_handles)
from .frameworks import (MissingFrameworkError, available_frameworks,
                         require_framework)
from .torch_compat import allow_mmengine_checkpoints

__all__ = [
    'DWNET_FLOP_HANDLES', 'flop_analyzer', 'register_flop_handles',
    'MissingFrameworkError', 'available_frameworks', 'require_framework',
    'allow_mmengine_checkpoints'
]
