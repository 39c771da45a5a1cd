"""The 1x1 convs and MLPs of the layers: PyTorch's own GEMMs (MKL/oneDNN on
CPUs, cuBLAS on GPUs) through ``F.linear``, which adds the bias in the
product. A hand-written GEMM tuned for one CPU family ran 2.5x slower than
the library on another (see docs/speed.md)."""
import torch.nn.functional as F


def linear(x, weight, bias=None, relu=False):
    """``x @ weight.T + bias`` over the last dim of ``x``, then ReLU if
    ``relu``.

    Args:
        x (Tensor): (..., in_features) input.
        weight (Tensor): (out_features, in_features) weight.
        bias (Tensor, optional): (out_features, ) bias. Defaults to None.
        relu (bool): Apply ReLU to the result. Defaults to False.

    Returns:
        Tensor: (..., out_features).
    """
    out = F.linear(x, weight, bias)
    # In place: the product's backward does not need its output.
    return F.relu(out, inplace=True) if relu else out


def mlp(x, fc1, fc2):
    """``fc2(gelu(fc1(x)))`` over the last dim of ``x`` (exact GELU).

    Args:
        x (Tensor): (..., C) input.
        fc1 (nn.Linear): C -> hidden.
        fc2 (nn.Linear): hidden -> C_out.

    Returns:
        Tensor: (..., C_out).
    """
    return F.linear(F.gelu(F.linear(x, fc1.weight, fc1.bias)), fc2.weight,
                    fc2.bias)
