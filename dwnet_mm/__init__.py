"""DWNet for OpenMMLab: one backbone for mmpretrain, mmdet and mmseg.

Importing this package registers, in mmengine's root registries (and so for
every OpenMMLab framework): the ``DWNet`` backbone, the recipes'
``WarmupCosineLR`` schedule and ``MicroBatchClipOptimWrapper``, the
``LayerDecayOptimWrapperConstructor``, the ``ImageNetReaLAccuracy`` metric,
and for the paper's ablations the ``SwinAblation`` builder and the norms
``LN2d``, ``CCBN``, ``TokenBN`` and ``TokenCCBN``.
It needs only torch, mmengine and mmcv; framework-specific helpers ask for
their framework when used.

Importing it changes nothing else in the process: in particular torch's
safe-globals list (``torch.serialization.get_safe_globals()``) stays as it
was, and so do mmengine's FLOP-handle tables (dwnet_mm's counters pass their
handles explicitly: :func:`dwnet_mm.utils.register_flop_handles`).
Checkpoints are read with :func:`dwnet_mm.safe_loading.safe_load`; wrap a
Runner of your own in :func:`dwnet_mm.safe_loading.checkpoint_loading` to have
its ``resume`` / ``load_from`` read that way too (the tools do).

With mmpretrain, ``dwnet_mm.register_model_index()`` makes the
classification configs known to it by name
(``get_model('dwnet-tiny_8xb128_in1k')``, ``list_models('*dwnet*')``; see
:mod:`dwnet_mm.utils.model_index`); importing dwnet_mm does not.
"""
from .engine import LayerDecayOptimWrapperConstructor
from .evaluation import ImageNetReaLAccuracy  # noqa: F401
from .models import DWNet
from .utils.model_index import register_model_index
from .utils.torch_compat import allow_mmengine_checkpoints
from .version import __version__

__all__ = [
    'DWNet', 'LayerDecayOptimWrapperConstructor', 'allow_mmengine_checkpoints',
    'register_model_index', '__version__'
]
