"""Read mmengine checkpoints under torch >= 2.6 without weakening torch.

mmengine 0.10.x calls ``torch.load`` without ``weights_only``; since torch
2.6 that means torch's safe unpickler, which refuses mmengine's own resume
files (their ``message_hub`` pickles ``HistoryBuffer`` objects and numpy
arrays). Allow-listing those types for good would weaken
``torch.load(weights_only=True)`` for every library in the process. Inside
:func:`allow_mmengine_checkpoints` (:func:`dwnet_mm.safe_loading.
checkpoint_loading` under the name mmengine users look for), mmengine's
checkpoint reads go through :func:`dwnet_mm.safe_loading.safe_load`, which
reads exactly those types through checked stand-ins::

    with allow_mmengine_checkpoints():
        runner = Runner.from_cfg(cfg)
        runner.train()  # may resume
"""
from ..safe_loading import checkpoint_loading as allow_mmengine_checkpoints

__all__ = ['allow_mmengine_checkpoints']
