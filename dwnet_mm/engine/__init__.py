from .layer_decay_constructor import LayerDecayOptimWrapperConstructor
from .micro_batch_clip_optim_wrapper import MicroBatchClipOptimWrapper
from .warmup_cosine_lr import WarmupCosineLR

__all__ = [
    'LayerDecayOptimWrapperConstructor', 'MicroBatchClipOptimWrapper',
    'WarmupCosineLR'
]
