"""Export-friendly forms of the per-image and per-pixel depth-wise convs.

ONNX has no convolution whose kernels vary per image or per position: the
batch-folded grouped conv of the dynamic conv needs a group count (B * C)
fixed at export time, and the I-Dynamic conv runs in an autograd Function
(CPU) or a Triton kernel (GPU). While the model is exported they run as
k * k shifted multiply-adds on plain tensors instead (Pad, Slice, Mul, Add
in ONNX), which follow the batch and map sizes of the input at run time.
"""
import torch
import torch.nn.functional as F


def onnx_exporting():
    """True while ``torch.onnx.export`` traces or exports the model (either
    exporter), where only ops with standard ONNX counterparts may run."""
    if torch.onnx.is_in_onnx_export():
        return True
    is_exporting = getattr(torch.compiler, 'is_exporting', None)
    return bool(is_exporting is not None and is_exporting())


def depthwise_conv_taps(x, weight, kernel_size, pad_before, pad_after):
    """Depth-wise conv as a sum of shifted products, one per kernel tap.

    ``out[b, g, c, h, w] = sum_{i, j} weight[b, g, i * k + j, h, w] *
    x_pad[b, g, c, h + i, w + j]``, where ``x_pad`` is ``x`` zero-padded by
    ``pad_before`` rows/columns at the top/left and ``pad_after`` at the
    bottom/right. The two last dims of ``weight`` may be 1 (one kernel per
    image, broadcast over the positions).

    Only out-of-place ops whose sizes follow the input: the exported graph
    takes any batch and map size.

    Args:
        x (Tensor): (B, G, C/G, H, W) input, channels grouped by kernel.
        weight (Tensor): (B, G, k*k, H_out | 1, W_out | 1) kernels.
        kernel_size (int): k.
        pad_before (int): Zero padding at the top and left.
        pad_after (int): Zero padding at the bottom and right.

    Returns:
        Tensor: (B, G, C/G, H_out, W_out), ``H_out = H + pad_before +
        pad_after - k + 1`` (likewise ``W_out``).
    """
    k = kernel_size
    H, W = x.shape[-2:]
    x = F.pad(x, (pad_before, pad_after, pad_before, pad_after))
    height = H + pad_before + pad_after - k + 1
    width = W + pad_before + pad_after - k + 1
    # unbind: the backward stacks the k*k kernel gradients once, where
    # slices would each write a zeroed tensor of all kernels.
    taps = weight.unbind(2)
    out = None
    for i in range(k):
        rows = x[..., i:i + height, :]
        for j in range(k):
            term = rows[..., j:j + width] * taps[i * k + j].unsqueeze(2)
            out = term if out is None else out + term
    return out
