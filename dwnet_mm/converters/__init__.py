from .authors import (convert_authors_backbone,
                      convert_authors_full_checkpoint,
                      convert_authors_full_model, convert_authors_key,
                      is_authors_layout)
from .deploy import state_dict_for, training_form
from .loading import (UnknownCheckpointLayout, convert_checkpoint_file,
                      extract_backbone_state_dict,
                      load_checkpoint_file, load_dwnet_checkpoint,
                      resize_depthwise_kernel, save_checkpoint)

__all__ = [
    'state_dict_for', 'training_form',
    'convert_authors_backbone', 'convert_authors_full_checkpoint',
    'convert_authors_full_model',
    'convert_authors_key', 'is_authors_layout',
    'UnknownCheckpointLayout', 'convert_checkpoint_file',
    'extract_backbone_state_dict', 'load_checkpoint_file',
    'load_dwnet_checkpoint', 'resize_depthwise_kernel', 'save_checkpoint'
]
