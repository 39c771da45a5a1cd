"""Reading checkpoints that may be hostile: :func:`safe_load`, the one
reader, and :func:`checkpoint_loading`, which routes mmengine's reads
through it."""
from .safe_load import UnsafeCheckpointError, checkpoint_loading, safe_load

__all__ = ['UnsafeCheckpointError', 'checkpoint_loading', 'safe_load']
