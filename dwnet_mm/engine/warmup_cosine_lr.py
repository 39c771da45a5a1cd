import math

from mmengine.optim.scheduler.lr_scheduler import LRSchedulerMixin
from mmengine.optim.scheduler.param_scheduler import INF, _ParamScheduler
from mmengine.registry import PARAM_SCHEDULERS


# Root registry: visible from mmpretrain, mmdet and mmseg configs alike.
@PARAM_SCHEDULERS.register_module()
class WarmupCosineLR(LRSchedulerMixin, _ParamScheduler):
    """Linear warm-up inside one cosine over the whole run, set every
    iteration: timm's ``CosineLRScheduler`` (``warmup_prefix=False``,
    ``t_in_epochs=False``) as the Swin trainer that DWNet was trained with
    drives it.

    With ``lr`` the optimizer's lr (after any ``auto_scale_lr``), ``W`` the
    warm-up and ``T`` the whole schedule (``end - begin``), both in
    iterations, the schedule at iteration ``t`` is::

        t < W:   lr * (warmup_ratio + (1 - warmup_ratio) * t / W)
        t >= W:  lr_min + (lr - lr_min) * (1 + cos(pi * t / T)) / 2,
                 lr_min = lr * eta_min_ratio

    The cosine's phase counts from ``begin``, not from the end of the
    warm-up. Warm-up start and final lr are fractions of ``lr`` so that they
    scale with it, as the trainer scales all three with the total batch.

    The trainer sets the lr after each optimizer update from the index of
    the update's last iteration, for the next update. Iteration ``i`` (a
    micro-batch when the optimizer wrapper accumulates gradients over ``A``
    iterations) therefore runs with the schedule at
    ``max(A * (i // A) - 1, 0)``: the first two updates both use the
    warm-up's start. ``A`` is read from the optimizer wrapper.

    Args:
        optimizer (OptimWrapper or Optimizer): Wrapped optimizer.
        warmup (int): Warm-up length, in epochs when the config says
            ``by_epoch=True`` (with ``convert_to_iter_based=True``, which
            this scheduler requires).
        warmup_ratio (float): lr at the start of the warm-up, as a fraction
            of ``lr``. Defaults to 1e-3.
        eta_min_ratio (float): Final lr as a fraction of ``lr``.
            Defaults to 1e-2.
        begin (int): First iteration of the schedule. Defaults to 0.
        end (int): End of the schedule (the cosine's horizon). mmengine's
            Runner fills in the run's length when it is not set.
            Defaults to INF (an error: the horizon must be known).
        last_step (int): Index of the last step, for resuming without a
            state dict. Defaults to -1.
        by_epoch (bool): Must be False once built; an epoch-based config
            is converted by :meth:`build_iter_from_epoch`. Defaults to False.
        verbose (bool): Print every update. Defaults to False.
    """

    def __init__(self,
                 optimizer,
                 warmup,
                 warmup_ratio=1e-3,
                 eta_min_ratio=1e-2,
                 begin=0,
                 end=INF,
                 last_step=-1,
                 by_epoch=False,
                 verbose=False):
        if by_epoch:
            raise ValueError(
                f'{type(self).__name__} sets the lr every iteration: give '
                'by_epoch=True together with convert_to_iter_based=True, or '
                'lengths in iterations with by_epoch=False')
        if end >= INF:
            raise ValueError(
                f'{type(self).__name__} needs the schedule\'s end (the '
                'cosine\'s horizon); the Runner sets it to the run\'s length '
                'when the config leaves it out')
        if not 0 <= warmup < end - begin:
            raise ValueError(f'warmup must be in [0, {end - begin}), got '
                             f'{warmup}')
        self.warmup = warmup
        self.warmup_ratio = warmup_ratio
        self.eta_min_ratio = eta_min_ratio
        # Iterations per optimizer update (OptimWrapper's accumulation).
        self.iters_per_update = getattr(optimizer, '_accumulative_counts', 1)
        super().__init__(
            optimizer,
            begin=begin,
            end=end,
            last_step=last_step,
            by_epoch=by_epoch,
            verbose=verbose)

    @classmethod
    def build_iter_from_epoch(cls,
                              *args,
                              warmup,
                              begin=0,
                              end=INF,
                              by_epoch=True,
                              epoch_length=None,
                              **kwargs):
        """Build the per-iteration scheduler from lengths in epochs."""
        assert by_epoch, 'only an epoch-based config can be converted'
        assert epoch_length is not None and epoch_length > 0, \
            f'epoch_length must be a positive integer, got {epoch_length}'
        # timm's Swin trainer: int(epochs * iterations per epoch).
        warmup = int(warmup * epoch_length)
        begin = int(begin * epoch_length)
        if end != INF:
            end = int(end * epoch_length)
        return cls(
            *args,
            warmup=warmup,
            begin=begin,
            end=end,
            by_epoch=False,
            **kwargs)

    def schedule(self, base_lr, t):
        """The lr at iteration ``t`` of the schedule (timm's formula)."""
        if t < self.warmup:
            start = base_lr * self.warmup_ratio
            return start + t * ((base_lr - start) / self.warmup)
        lr_min = base_lr * self.eta_min_ratio
        return lr_min + 0.5 * (base_lr - lr_min) * (
            1 + math.cos(math.pi * t / (self.end - self.begin)))

    def _get_value(self):
        per_update = self.iters_per_update
        t = max(per_update * (self.last_step // per_update) - 1, 0)
        return [self.schedule(base_lr, t) for base_lr in self.base_values]
