"""The inhomogeneous dynamic (I-Dynamic) depth-wise conv on NHWC tensors:
:func:`i_dynamic_conv` (the op, from the kernel generator's features) and
its native CPU kernels (:func:`i_dynamic_conv_nhwc`, inference).

The op's other backends, on NCHW views, are in
:mod:`dwnet_mm.ops.i_dynamic_backends`.
"""
import torch
import torch.nn.functional as F

from .depthwise import native_depthwise_supported
from .dispatch import needs_autograd, tracing
from .i_dynamic_backends import (generate_and_apply_i_dynamic,
                                 i_dynamic_conv_from_hidden,
                                 inhomogeneous_dynamic_conv)
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
    x = x.detach().contiguous()
    # Detached: the kernel's GEMM (addmm with out=) runs on torch's worker
    # threads, where no_grad does not hold, and refuses inputs that
    # require grad (fp32 features from a graph, given under no_grad).
    features = hidden.detach().reshape(N * H * W, -1).float()
    weight = weight.detach()
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


def i_dynamic_conv(x, hidden, weight, bias, kernel_size, groups,
                   input_scale=None, out_bias=None, relu=False,
                   channel_order=None):
    """The I-Dynamic conv from the kernel generator's features.

    ``kernels[p] = weight @ hidden[p] + bias``, laid out (G, k, k), and
    ``out[p, c] = out_bias[c] + sum_ij kernels[p, g(c), i, j] *
    input_scale[c] * x[p + (i - k//2, j - k//2), c]`` (zero padding, even k
    keep the offsets -k//2 .. k//2-1), then ReLU if ``relu``; the group
    ``g(c)`` is ``c // (C / G)``. The backend, chosen once:

    * exporting or tracing: all kernels generated, then
      :func:`inhomogeneous_dynamic_conv` (its ONNX form, or the autograd
      Function that mmengine's FLOP counter knows);
    * autograd: :func:`i_dynamic_conv_from_hidden` (Triton on GPUs, which
      generates the kernels again in the backward, else the autograd
      Function), with the scale and bias as separate ops;
    * else the native kernels where :func:`native_i_dynamic_supported`,
      else :func:`generate_and_apply_i_dynamic` (Triton or PyTorch ops in
      chunks that never hold all kernels).

    Args:
        x (Tensor): (N, H, W, C) input.
        hidden (Tensor): (N, H, W, C_h) generator features (after its first
            layer, norm and ReLU).
        weight (Tensor): (G*k*k, C_h) last generator layer.
        bias (Tensor, optional): Its (G*k*k, ) bias.
        kernel_size (int): k.
        groups (int): G.
        input_scale (Tensor, optional): (C, ) factors of ``x`` (not of
            ``hidden``), in the natural channel order. Defaults to None.
        out_bias (Tensor, optional): (C, ) output bias, in the natural
            channel order. Defaults to None.
        relu (bool): Apply ReLU to the output. Defaults to False.
        channel_order (Tensor, optional): ``interleaved_channels(C, G)``
            where ``x`` and the output are in the interleaved order of the
            fast native kernel; the other backends undo it around the conv.
            Defaults to None: the natural order.

    Returns:
        Tensor: (N, H, W, C), NHWC-contiguous, in the dtype rules of
        :func:`inhomogeneous_dynamic_conv`.
    """
    k = kernel_size
    if tracing():
        backend = 'full'
    elif needs_autograd(x, hidden, weight, bias, input_scale, out_bias):
        backend = 'autograd'
    elif native_i_dynamic_supported(x, k, groups,
                                    interleaved=channel_order is not None):
        backend = 'native'
    else:
        backend = 'chunks'
    if backend == 'native':
        if channel_order is not None:
            input_scale = _reordered(input_scale, channel_order)
            out_bias = _reordered(out_bias, channel_order)
        return i_dynamic_conv_nhwc(x, hidden, weight, bias, k, groups,
                                   input_scale, out_bias, relu,
                                   interleaved=channel_order is not None)
    if channel_order is not None:
        x = x[..., torch.argsort(channel_order)]
    out = _i_dynamic_conv_nchw(backend, x.permute(0, 3, 1, 2), hidden,
                               weight, bias, k, groups, input_scale,
                               out_bias, relu)
    if channel_order is not None:
        return out[..., channel_order]
    return out


def _i_dynamic_conv_nchw(backend, x, hidden, weight, bias, kernel_size,
                         groups, input_scale, out_bias, relu):
    """:func:`i_dynamic_conv` on the NCHW view ``x``, in the natural order,
    for the non-native backends; returns NHWC-contiguous memory."""
    B, C, H, W = x.shape
    if backend == 'chunks':
        out = generate_and_apply_i_dynamic(x, hidden, weight, bias,
                                           kernel_size, groups, input_scale,
                                           out_bias).permute(0, 2, 3, 1)
        if not relu:
            return out.contiguous()
        # ReLU in the copy to NHWC.
        return torch.clamp_min(out, 0, out=out.new_empty(B, H, W, C))
    if input_scale is not None:
        x = x * input_scale.view(1, C, 1, 1)
    if backend == 'full':
        out = inhomogeneous_dynamic_conv(x, _all_kernels(hidden, weight, bias),
                                         kernel_size)
    else:
        out = i_dynamic_conv_from_hidden(x, hidden, weight, bias,
                                         kernel_size, groups)
    if out_bias is not None:
        out = out + out_bias.view(1, C, 1, 1)
    if relu:
        out = F.relu(out)
    return out.permute(0, 2, 3, 1).contiguous()


def _all_kernels(hidden, weight, bias):
    """(B, G*k*k, H, W) kernels of all pixels, in plain ops."""
    B, H, W, _ = hidden.shape
    kernels = torch.matmul(weight,
                           hidden.reshape(B, H * W, -1).transpose(1, 2))
    if bias is not None:
        kernels = kernels + bias.view(1, -1, 1)
    return kernels.view(B, -1, H, W)


def _reordered(t, order):
    return None if t is None else t[order]


def _f32(t):
    return None if t is None else t.detach().float().contiguous()
