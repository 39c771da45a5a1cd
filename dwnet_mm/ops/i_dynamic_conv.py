"""Inhomogeneous dynamic depth-wise conv on NHWC tensors with the native
CPU kernels (inference)."""
import torch

from .depthwise_conv import native_depthwise_supported
from .native import native_ops

# Pixels whose kernels a thread generates and applies at a time: their
# kernels (k*k*G per pixel, 16x the input at DWNet-T's first stage; 1.6 MiB
# for 256 pixels) stay in cache between the GEMM that writes them and the
# kernel that reads them, and the GEMM, whose inner size is only the
# generator width (C/4), has rows enough to run well: 256 ran the first two
# stages 8-15% faster than 128 (2 threads, batch 8).
I_DYNAMIC_CHUNK_PIXELS = 256


def native_i_dynamic_supported(x, kernel_size, groups, interleaved=False):
    """Whether :func:`i_dynamic_conv_nhwc` runs natively for ``x``.

    Args:
        x (Tensor): (N, H, W, C) input.
        kernel_size (int): k.
        groups (int): G, the channel groups that share a kernel.
        interleaved (bool): In the interleaved channel order (G a multiple
            of 8). Defaults to False.
    """
    if interleaved and groups % 8:
        return False
    return groups >= 8 and x.shape[-1] % groups == 0 and \
        native_depthwise_supported(x, kernel_size)


def interleaved_channels(channels, groups, device=None):
    """The interleaved channel order: index ``s * G + g`` holds channel
    ``g * (C / G) + s``, the ``s``-th channel of group ``g``.

    In this order a vector of 8 channels has the kernels of 8 groups, one
    plain load, where the grouped order needs a lane permutation per vector
    and kernel tap (which halves the kernel's speed on AVX2 CPUs).

    Args:
        channels (int): C.
        groups (int): G.
        device (torch.device, optional): Of the index tensor.

    Returns:
        Tensor: (C, ) int64 indices, ``x[..., order]`` reorders ``x``.
    """
    return torch.arange(channels, device=device).view(groups, -1).t(
    ).reshape(-1)


@torch.no_grad()
def i_dynamic_conv_nhwc(x, hidden, weight, bias, kernel_size, groups,
                        input_scale=None, out_bias=None, relu=False,
                        interleaved=False):
    """Generate the per-pixel kernels and apply them, chunk by chunk.

    ``kernels[p] = weight @ hidden[p] + bias``, laid out (G, k, k), and
    ``out[p, c] = out_bias[c] + input_scale[c] * sum_ij kernels[p, g(c), i,
    j] * x[p + (i - k//2, j - k//2), c]`` with zero padding, then ReLU if
    ``relu``; the group ``g(c)`` is ``c // (C / G)``, or ``c % G`` in the
    interleaved order (see :func:`interleaved_channels`). Check
    :func:`native_i_dynamic_supported` first: this always runs the native
    kernels, without autograd.

    Args:
        x (Tensor): (N, H, W, C) input.
        hidden (Tensor): (N, H, W, C_h) generator features.
        weight (Tensor): (G*k*k, C_h) last generator layer.
        bias (Tensor, optional): Its (G*k*k, ) bias.
        kernel_size (int): k.
        groups (int): G.
        input_scale (Tensor, optional): (C, ) factors of ``x``.
        out_bias (Tensor, optional): (C, ) output bias.
        relu (bool): Apply ReLU to the output. Defaults to False.
        interleaved (bool): ``x``, ``input_scale``, ``out_bias`` and the
            output are in the interleaved channel order. Defaults to False.

    Returns:
        Tensor: (N, H, W, C), contiguous.
    """
    N, H, W, C = x.shape
    k2 = kernel_size**2
    x = x.contiguous()
    features = hidden.reshape(N * H * W, -1).float()
    # Rows reordered from (G, k*k) to (k*k, G): the G values of a tap are
    # contiguous for the kernel.
    weight = weight.float().view(groups, k2, -1).transpose(0, 1).reshape(
        k2 * groups, -1)
    if bias is not None:
        bias = bias.view(groups, k2).t().reshape(-1)
    pixels = features.shape[0]
    threads = torch.get_num_threads()
    # Whole rounds of chunks for the threads: no thread idles at the end.
    num_chunks = -(-pixels // I_DYNAMIC_CHUNK_PIXELS)
    num_chunks = -(-num_chunks // threads) * threads
    return native_ops().i_dynamic_conv_nhwc(
        x, features, weight.t().contiguous(), _f32(bias), kernel_size,
        _f32(input_scale), _f32(out_bias), relu, -(-pixels // num_chunks),
        interleaved)


def _f32(t):
    return None if t is None else t.float().contiguous()
