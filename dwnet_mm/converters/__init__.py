from .authors import (convert_authors_backbone,
                      convert_authors_full_checkpoint,
                      convert_authors_full_model, convert_authors_key,
                      is_authors_layout)
from .loading import (UnknownCheckpointLayout, convert_checkpoint_file,
                      extract_backbone_state_dict,
                      load_checkpoint_file, load_dwnet_checkpoint,
                      resize_depthwise_kernel)
from .safe_load import (KNOWN_HARMLESS_CLASSES, PickledObject,
                        UnsafeCheckpointError, checkpoint_loading,
                        plain_containers, safe_load)

__all__ = [
    'convert_authors_backbone', 'convert_authors_full_checkpoint',
    'convert_authors_full_model',
    'convert_authors_key', 'is_authors_layout',
    'UnknownCheckpointLayout', 'convert_checkpoint_file',
    'extract_backbone_state_dict',
    'load_checkpoint_file', 'load_dwnet_checkpoint', 'resize_depthwise_kernel',
    'KNOWN_HARMLESS_CLASSES', 'PickledObject', 'UnsafeCheckpointError',
    'checkpoint_loading', 'plain_containers', 'safe_load'
]
