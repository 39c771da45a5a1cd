"""Let torch's safe loader (weights_only=True) read mmengine checkpoints."""
import collections

import torch


def mmengine_checkpoint_types():
    """The non-tensor types found in mmengine 0.10 resume checkpoints.

    ``message_hub`` holds :class:`HistoryBuffer` objects (with numpy arrays
    and scalars) and a Counter.
    """
    import numpy as np
    from mmengine.logging import HistoryBuffer

    from numpy.core import multiarray
    numpy_types = [
        np.ndarray, np.dtype, multiarray._reconstruct, multiarray.scalar
    ]
    # numpy >= 1.25 pickles dtypes through their per-type classes.
    numpy_types += [type(np.dtype(t)) for t in (
        np.float16, np.float32, np.float64, np.int32, np.int64, np.bool_)]
    # HistoryBuffer pickles its statistics methods as getattr(cls, name);
    # the safe unpickler still refuses to call anything not allow-listed.
    return [HistoryBuffer, getattr, collections.Counter] + numpy_types


def allow_mmengine_checkpoints():
    """Allow-list exactly the types of mmengine's own checkpoints.

    mmengine 0.10.x calls ``torch.load`` without ``weights_only``; since
    torch 2.6 that means safe loading, which rejects its ``--resume`` files.
    Rather than switching safe loading off, register the few types they
    contain. Idempotent.

    Returns:
        list[type]: The allow-listed types.
    """
    types = mmengine_checkpoint_types()
    if hasattr(torch.serialization, 'add_safe_globals'):
        torch.serialization.add_safe_globals(types)
    return types
