from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS


# Root registry: visible from mmpretrain, mmdet and mmseg configs alike.
@OPTIM_WRAPPERS.register_module()
class MicroBatchClipOptimWrapper(OptimWrapper):
    """Gradient accumulation as the Swin trainer does it: the gradients are
    synchronised across processes after every micro-batch and the running
    sum is clipped after every backward pass, not once before the update.

    mmengine's :class:`OptimWrapper` skips the all-reduce of the first
    ``accumulative_counts - 1`` micro-batches (``no_sync``) and clips once,
    before ``optimizer.step()``. With ``clip_grad=dict(max_norm=m)`` and
    ``accumulative_counts=2`` this wrapper computes, like the trainer the
    DWNet authors ran I-Dynamic-T with::

        g = clip(g1 / 2, m);  g = clip(g + g2 / 2, m);  step(g)

    where ``g1, g2`` are the micro-batches' gradients averaged over the
    processes. Without accumulation it is :class:`OptimWrapper`.

    Args: as :class:`mmengine.optim.OptimWrapper`.
    """

    def should_sync(self):
        """Every backward pass all-reduces (no ``no_sync`` context)."""
        return True

    def backward(self, loss, **kwargs):
        super().backward(loss, **kwargs)
        if self.clip_grad_kwargs:
            self._clip_grad()

    def step(self, **kwargs):
        # The last backward pass already clipped the summed gradient.
        self.optimizer.step(**kwargs)
