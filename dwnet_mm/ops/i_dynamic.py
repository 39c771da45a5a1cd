"""The inhomogeneous dynamic (I-Dynamic) depth-wise conv: a k x k kernel per
pixel, generated from the pixel's features and shared by a channel group.

:func:`i_dynamic_conv_from_hidden` is the op (NHWC, from the generator's
hidden features); :func:`i_dynamic_conv_with_kernels` applies given kernels
(NCHW).
Backends (:func:`.backend.backend_for`):

* native CPU kernels: one call that generates the kernels of a chunk of
  pixels (a library GEMM) and applies them while they are in cache; with
  autograd inside :class:`InhomogeneousDynamicConvFunction`, whose backward
  generates them again one image at a time;
* Triton on GPUs (:mod:`.triton_i_dynamic_conv`);
* PyTorch ops, also the fallback and the ONNX export form: all kernels,
  then k*k shifted products (:func:`i_dynamic_conv_with_kernels`).

The kernels' rows are laid out (k*k, G), tap-major: the G values of one tap
are contiguous for the native kernels. The channels are in the grouped
order (channel ``g * C/G + s`` in group ``g``) or in the interleaved one
(channel ``s * G + g`` in group ``g``), which the native kernels need: the
deploy form bakes it into its weights (:func:`interleaved_channels`), the
training form's activations are transposed around the native kernels.
"""
import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .backend import backend_for, native_ops, needs_autograd
from .depthwise import NATIVE_KERNEL_SIZES
from .export import depthwise_conv_taps
from .triton_i_dynamic_conv import (triton_i_dynamic_conv,
                                    triton_i_dynamic_conv_into)

# Pixels whose kernels a thread generates and applies at a time: their
# kernels (k*k*G per pixel, 1.6 MiB for 256 pixels) stay in cache between
# the GEMM that writes them and the kernel that reads them, and the GEMM,
# whose inner size is only the generator width (C/4), has rows enough to
# run well.
I_DYNAMIC_CHUNK_PIXELS = 256


def interleaved_channels(channels, groups, device=None):
    """The interleaved channel order: index ``s * G + g`` holds channel
    ``g * (C / G) + s``, the ``s``-th channel of group ``g``.

    Args:
        channels (int): C.
        groups (int): G.
        device (torch.device, optional): Of the index tensor.

    Returns:
        Tensor: (C, ) int64 indices, ``x[..., order]`` reorders ``x``.
    """
    return torch.arange(channels, device=device).view(groups, -1).t(
    ).reshape(-1)


def _interleave(x, groups):
    """(..., C) from the grouped to the interleaved channel order."""
    shape = x.shape
    return x.reshape(*shape[:-1], groups, -1).transpose(-1, -2).reshape(shape)


def _group(x, groups):
    """(..., C) from the interleaved to the grouped channel order."""
    shape = x.shape
    return x.reshape(*shape[:-1], -1, groups).transpose(-1, -2).reshape(shape)


def i_dynamic_dtypes(x, weight):
    """Output and compute dtypes: behave like a conv under autocast (output
    in the autocast dtype), but accumulate the k*k products in fp32."""
    device = x.device.type
    if torch.is_autocast_enabled(device):
        out_dtype = torch.get_autocast_dtype(device)
    else:
        out_dtype = torch.promote_types(x.dtype, weight.dtype)
    compute_dtype = torch.float32 if out_dtype in (
        torch.float16, torch.bfloat16) else out_dtype
    return out_dtype, compute_dtype


def i_dynamic_conv_with_kernels(x, weight, kernel_size):
    """Depth-wise conv with a kernel per position, shared by channel groups,
    on given kernels (the PyTorch form, or Triton on GPUs).

    ``out[n, c, h, w] = sum_{i, j} weight[n, g(c), i, j, h, w] *
    x[n, c, h + i - k // 2, w + j - k // 2]`` with zero padding, where the C
    channels form G contiguous groups.

    Args:
        x (Tensor): Input of shape (B, C, H, W).
        weight (Tensor): Kernels of shape (B, G * k * k, H, W), laid out as
            (B, G, k, k, H, W).
        kernel_size (int): k.

    Returns:
        Tensor: Output of shape (B, C, H, W); in the autocast dtype under
        autocast, else in the promoted dtype of ``x`` and ``weight``.
    """
    B, C, H, W = x.shape
    k2 = kernel_size**2
    if weight.dim() != 4 or weight.shape[0] != B or weight.shape[1] % k2 \
            or weight.shape[2:] != x.shape[2:]:
        raise ValueError(
            f'weight of shape {tuple(weight.shape)} does not fit input '
            f'{tuple(x.shape)}: expected (B, G*{k2}, H, W)')
    G = weight.shape[1] // k2
    if C % G:
        raise ValueError(f'{C} channels cannot be split into {G} groups')
    out_dtype, dtype = i_dynamic_dtypes(x, weight)
    weight = weight.reshape(B, G, k2, H, W)
    if backend_for(x, triton=True) == 'triton':
        return triton_i_dynamic_conv(x, weight, kernel_size, out_dtype)
    return _taps(x.reshape(B, G, C // G, H, W).to(dtype), weight.to(dtype),
                 kernel_size).reshape(B, C, H, W).to(out_dtype)


def _taps(x, kernels, k):
    """(B, G, C/G, H, W) ``x`` and (B, G, k*k, H, W) kernels (any strides):
    k*k shifted products, "same" window."""
    return depthwise_conv_taps(x, kernels, k, k // 2, (k - 1) // 2)


def _pytorch_form(x, kernels, kernel_size, groups, interleaved):
    """(N, H, W, C) ``x``, (N, H, W, k*k*G) tap-major kernels -> (N, H, W,
    C), in PyTorch ops (the fallback and the ONNX export form)."""
    N, H, W, C = x.shape
    k2, S = kernel_size**2, C // groups
    out_dtype, dtype = i_dynamic_dtypes(x, kernels)
    x = x.permute(0, 3, 1, 2).to(dtype)
    x = x.reshape(N, S, groups, H, W).transpose(1, 2) if interleaved else \
        x.reshape(N, groups, S, H, W)
    kernels = kernels.to(dtype).view(N, H, W, k2, groups).permute(
        0, 4, 3, 1, 2)
    out = _taps(x, kernels, kernel_size)
    if interleaved:
        out = out.transpose(1, 2)
    return out.reshape(N, C, H, W).permute(0, 2, 3, 1).to(out_dtype)


class InhomogeneousDynamicConvFunction(torch.autograd.Function):
    """The I-Dynamic conv of (N, H, W, C) ``x``, interleaved channels, from
    the generator's (N, H, W, C_h) ``hidden`` features and its last layer,
    ``weight`` (k*k, G, C_h) and ``bias`` (k*k, G), in the native CPU
    kernels (in a ``torch.jit.trace`` without them: the PyTorch form; one
    node for the FLOP counter either way).

    The (N, H*W, k*k, G) kernels, 16x the input at stage 1 of DWNet-T, are
    never held whole: the forward generates and applies them in chunks of
    pixels, the backward generates them again one image at a time (an
    extra generator GEMM, cheaper than the page faults of a fresh 150 MiB
    tensor and its gradient in every step, and than keeping it saved).
    """

    @staticmethod
    def forward(ctx, x, hidden, weight, bias, kernel_size):
        ctx.save_for_backward(x, hidden, weight, bias)
        ctx.kernel_size = kernel_size
        groups = weight.shape[1]
        ctx.native = native_ops() is not None and _runs_native(
            x, kernel_size, groups)
        weight, bias = _flat_generator(weight, bias)
        if not ctx.native:
            return _pytorch_form(x, F.linear(hidden, weight, bias),
                                 kernel_size, groups,
                                 interleaved=True).contiguous()
        return _fused_native(x, hidden, weight, bias, kernel_size)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, hidden, weight, bias = ctx.saved_tensors
        k = ctx.kernel_size
        if not ctx.native:
            with torch.enable_grad():
                inputs = [t.detach().requires_grad_() if t is not None else
                          None for t in (x, hidden, weight, bias)]
                flat_weight, flat_bias = _flat_generator(*inputs[2:])
                out = _pytorch_form(
                    inputs[0], F.linear(inputs[1], flat_weight, flat_bias), k,
                    weight.shape[1], interleaved=True)
                given = [t for t in inputs if t is not None]
                grads = iter(torch.autograd.grad(out, given, grad))
                return (*(next(grads) if t is not None else None
                          for t in inputs), None)
        return (*_native_backward(x, hidden, weight, bias, grad, k,
                                  ctx.needs_input_grad[:4]), None)


def _flat_generator(weight, bias):
    """(k*k, G, C_h) and (k*k, G) as the (k*k*G, C_h) weight and bias of
    one linear layer."""
    flat_bias = None if bias is None else bias.reshape(-1)
    return weight.reshape(-1, weight.shape[-1]), flat_bias


def _fused_native(x, hidden, weight, bias, k, input_scale=None,
                  out_bias=None, relu=False):
    """The native kernel that generates the kernels of a chunk of pixels
    (a library GEMM) and applies them while they are in cache; inputs in
    the interleaved channel order, no autograd."""
    N, H, W, C = x.shape
    pixels = N * H * W
    threads = torch.get_num_threads()
    # Whole rounds of chunks for the threads: no thread idles at the end.
    chunks = -(-pixels // I_DYNAMIC_CHUNK_PIXELS)
    chunks = -(-chunks // threads) * threads
    # Detached: the kernel's GEMMs run on torch's worker threads, where
    # no_grad does not hold, and refuse inputs that require grad.
    return native_ops().i_dynamic_conv_nhwc(
        x.detach().contiguous(), hidden.detach().reshape(pixels, -1).float(),
        weight.detach(), _detached(bias), k, _detached(input_scale),
        _detached(out_bias), relu, -(-pixels // chunks))


def _native_backward(x, hidden, weight, bias, grad, k, needs):
    """Gradients of :class:`InhomogeneousDynamicConvFunction` for
    ``needs`` = which of (x, hidden, weight, bias) need them, one image at
    a time."""
    need_x, need_hidden, need_weight, need_bias = needs
    need_kernels = need_hidden or need_weight or need_bias
    flat_weight, flat_bias = _flat_generator(weight, bias)
    grad = grad.contiguous()
    H, W = x.shape[1:3]
    grad_x = torch.empty_like(x) if need_x else None
    grad_hidden = torch.empty_like(hidden) if need_hidden else None
    grad_weight = torch.zeros_like(flat_weight) if need_weight else None
    grad_bias = torch.zeros_like(flat_bias) if need_bias else None
    for n in range(x.shape[0]):
        features = hidden[n].reshape(H * W, -1)
        kernels = F.linear(features, flat_weight, flat_bias)
        image_grad_x, grad_kernels = native_ops().i_dynamic_backward(
            x[n:n + 1], kernels, grad[n:n + 1], k, need_x, need_kernels)
        if need_x:
            grad_x[n] = image_grad_x[0]
        if not need_kernels:
            continue
        grad_kernels = grad_kernels.view(H * W, -1)
        if need_hidden:
            torch.mm(grad_kernels, flat_weight,
                     out=grad_hidden[n].view(H * W, -1))
        if need_weight:
            grad_weight.addmm_(grad_kernels.t(), features)
        if need_bias:
            grad_bias += grad_kernels.sum(0)
    return (grad_x, grad_hidden,
            None if grad_weight is None else grad_weight.view_as(weight),
            None if grad_bias is None else grad_bias.view_as(bias))


def _runs_native(x, kernel_size, groups):
    return groups % 8 == 0 and x.shape[-1] % groups == 0 and \
        kernel_size in NATIVE_KERNEL_SIZES


def i_dynamic_conv_from_hidden(x, hidden, weight, bias, kernel_size, groups,
                               input_scale=None, out_bias=None, relu=False,
                               interleaved=False):
    """The I-Dynamic conv from the kernel generator's features.

    ``kernels[p] = weight @ hidden[p] + bias``, laid out (k*k, G), and
    ``out[p, c] = out_bias[c] + sum_ij kernels[p, i * k + j, g(c)] *
    input_scale[c] * x[p + (i - k//2, j - k//2), c]`` (zero padding, even k
    keep the offsets -k//2 .. k//2-1), then ReLU if ``relu``; the group
    ``g(c)`` is ``c // (C / G)``, or ``c % G`` if ``interleaved``.

    Args:
        x (Tensor): (N, H, W, C) input.
        hidden (Tensor): (N, H, W, C_h) generator features (after its first
            layer, norm and ReLU).
        weight (Tensor): (k*k*G, C_h) last generator layer, rows tap-major.
        bias (Tensor, optional): Its (k*k*G, ) bias.
        kernel_size (int): k.
        groups (int): G.
        input_scale (Tensor, optional): (C, ) factors of ``x`` (not of
            ``hidden``). Defaults to None.
        out_bias (Tensor, optional): (C, ) output bias. Defaults to None.
        relu (bool): Apply ReLU to the output. Defaults to False.
        interleaved (bool): ``x``, ``input_scale``, ``out_bias`` and the
            output are in the interleaved channel order. Defaults to False.

    Returns:
        Tensor: (N, H, W, C), NHWC-contiguous.
    """
    k = kernel_size
    where = backend_for(x, triton=True)
    if where == 'native' and not _runs_native(x, k, groups):
        where = 'torch'
    if where == 'triton':
        # The scale and the output bias applied in the kernel.
        out = _triton(x, hidden, weight, bias, k, groups, input_scale,
                      out_bias, interleaved)
        return (F.relu(out) if relu else out).contiguous()
    if where == 'native' and not needs_autograd(
            x, hidden, weight, bias, input_scale, out_bias):
        to_native = (lambda t: t) if interleaved else (
            lambda t: None if t is None else _interleave(t, groups))
        out = _fused_native(to_native(x), hidden, weight, bias, k,
                            to_native(input_scale), to_native(out_bias), relu)
        return out if interleaved else _group(out, groups)
    if input_scale is not None:
        x = x * input_scale
    if where in ('native', 'trace'):
        x_native = x if interleaved else _interleave(x, groups)
        out = InhomogeneousDynamicConvFunction.apply(
            x_native.contiguous(), hidden.contiguous(),
            weight.view(k * k, groups, -1),
            None if bias is None else bias.view(k * k, groups), k)
        if not interleaved:
            out = _group(out, groups)
    else:
        out = _pytorch_form(x, F.linear(hidden, weight, bias), k, groups,
                            interleaved)
    if out_bias is not None:
        out = out + out_bias
    return (F.relu(out) if relu else out).contiguous()


def _detached(t):
    return None if t is None else t.detach()


def _triton(x, hidden, weight, bias, k, groups, input_scale, out_bias,
            interleaved):
    """The Triton kernel, on NCHW grouped-order copies, all kernels
    generated at once in its (B, G, k*k, H, W) layout; returns NHWC."""
    N, H, W, C = x.shape
    k2 = k * k
    if interleaved:
        x = _group(x, groups)
        input_scale = None if input_scale is None else _group(input_scale,
                                                              groups)
        out_bias = None if out_bias is None else _group(out_bias, groups)
    # Rows from (k*k, G) to (G, k*k): (G*k*k, C_h) @ (N, C_h, HW) gives the
    # kernels in the kernel's layout with no copy of them.
    weight = weight.view(k2, groups, -1).transpose(0, 1).reshape(
        groups * k2, -1)
    kernels = torch.matmul(weight, hidden.reshape(N, H * W, -1).transpose(
        1, 2))
    if bias is not None:
        kernels = kernels + bias.view(k2, groups).t().reshape(-1, 1)
    kernels = kernels.view(N, groups, k2, H, W)
    x = x.permute(0, 3, 1, 2)
    if needs_autograd(x, kernels, input_scale, out_bias):
        if input_scale is not None:
            x = x * input_scale.view(1, C, 1, 1)
        out = triton_i_dynamic_conv(x, kernels, k)
        if out_bias is not None:
            out = out + out_bias.view(1, C, 1, 1)
    else:
        out = torch.empty(N, C, H, W, dtype=i_dynamic_dtypes(x, kernels)[0],
                          device=x.device)
        triton_i_dynamic_conv_into(out, x, kernels, k, input_scale, out_bias)
    out = out.permute(0, 2, 3, 1)
    return _interleave(out, groups) if interleaved else out
