"""Read mmengine checkpoints under torch >= 2.6 without weakening torch.

mmengine 0.10.x calls ``torch.load`` without ``weights_only``; since torch
2.6 that means torch's safe loader, which refuses mmengine's own resume
files (their ``message_hub`` pickles ``HistoryBuffer`` objects, numpy arrays
and ``getattr``). Allow-listing those in torch's process-wide safe-globals
list would weaken ``torch.load(weights_only=True)`` for every library in the
process, and ``getattr`` there lets a file reach any function (through
``torch._tensor._rebuild_from_type_v2``). Instead, while
:func:`allow_mmengine_checkpoints` is active, mmengine's checkpoint reads go
through :func:`dwnet_mm.converters.safe_load`, whose own restricted
unpickler reads exactly those types.
"""


def allow_mmengine_checkpoints(trust=False):
    """Context manager: mmengine reads checkpoints with dwnet_mm's
    safe loader (``--resume``, ``load_from``, ``Pretrained``) inside it.

    Example::

        with allow_mmengine_checkpoints():
            runner = Runner.from_cfg(cfg)
            runner.train()  # may resume

    Nothing is registered with torch; the change ends with the block.

    Args:
        trust (bool): Unpickle files the safe loader refuses with full
            pickle, which runs any code they contain. Defaults to False.

    Returns:
        A context manager (:func:`dwnet_mm.converters.checkpoint_loading`).
    """
    from ..converters.safe_load import checkpoint_loading
    return checkpoint_loading(trust=trust)
