"""DWNet for OpenMMLab: one backbone for mmpretrain, mmdet and mmseg.

Importing this package registers, in mmengine's root registries (and so for
every OpenMMLab framework): the ``DWNet`` backbone, the
``LayerDecayOptimWrapperConstructor`` and the ``ImageNetReaLAccuracy`` metric.
It needs only torch, mmengine and mmcv; framework-specific helpers ask for
their framework when used.
"""
from .engine import LayerDecayOptimWrapperConstructor
from .evaluation import ImageNetReaLAccuracy  # noqa: F401
from .models import DWNet
from .utils.torch_compat import allow_mmengine_checkpoints
from .version import __version__

# torch >= 2.6 loads with weights_only=True; mmengine 0.10.x resume files
# hold a few plain Python types that must be allow-listed to --resume.
allow_mmengine_checkpoints()

__all__ = [
    'DWNet', 'LayerDecayOptimWrapperConstructor', 'allow_mmengine_checkpoints',
    '__version__'
]
