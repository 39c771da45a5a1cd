"""A linear layer on a few rows with the native CPU kernels.

The dynamic conv's kernel generator maps one pooled row per image to
``C * k * k`` kernel values: a product with as few rows as images, where
BLAS is slow and every product streams the whole weight (up to 29 MB in
D-DWNet-T). The native kernels stream it once in the forward and once in the
backward, which makes all three gradients in that pass.
"""
import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .native import native_ops, native_ops_for

# The native kernels take up to 64 rows. With 8, 16 and 32 rows they ran
# 1.1-3.3x as fast as BLAS, forward and backward (2 threads, D-DWNet-T's
# generator shapes, caches flushed).
MAX_NATIVE_ROWS = 32


def native_small_batch_supported(x, weight, bias=None):
    """Whether :func:`small_batch_linear` runs natively for these tensors."""
    # native_ops_for first: tracing sees no shape test.
    return native_ops_for(x) is not None and x.dim() == 2 and \
        1 <= x.shape[0] <= MAX_NATIVE_ROWS and all(
            t is None or (t.dtype == torch.float32 and t.device == x.device)
            for t in (weight, bias))


class SmallBatchLinear(torch.autograd.Function):
    """``F.linear`` on the native small-batch kernels."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        x, weight = x.contiguous(), weight.contiguous()
        ctx.save_for_backward(x, weight)
        return native_ops().small_batch_linear(
            x, weight, None if bias is None else bias.contiguous())

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        # needs_input_grad is False for a None bias.
        grad_x, grad_weight, grad_bias = \
            native_ops().small_batch_linear_backward(
                grad.contiguous(), x, weight, *ctx.needs_input_grad)
        return grad_x, grad_weight, grad_bias


def small_batch_linear(x, weight, bias=None):
    """``F.linear(x, weight, bias)`` for a 2-D ``x``: on the native kernels
    for fp32 CPU tensors of at most :data:`MAX_NATIVE_ROWS` rows, else on
    ``F.linear``.

    Args:
        x (Tensor): (B, in_features) input.
        weight (Tensor): (out_features, in_features) weight.
        bias (Tensor, optional): (out_features, ) bias. Defaults to None.

    Returns:
        Tensor: (B, out_features).
    """
    if native_small_batch_supported(x, weight, bias):
        return SmallBatchLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)
