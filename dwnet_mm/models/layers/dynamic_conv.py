"""Depth-wise convolutions whose kernels are predicted from the input."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer

# Elements of one row chunk of the inhomogeneous dynamic conv: small enough
# that the k*k passes over a chunk stay in the L2 cache of a CPU core.
_CHUNK_ELEMENTS = 1 << 18


def batched_depthwise_conv(x, kernel, bias, padding):
    """Depth-wise conv with a different kernel for every image.

    The batch is folded into the channels, so the whole batch runs as one
    grouped convolution. For a channels-last input (the layout of the DWNet
    blocks) the fold goes through an (H, W, B, C) copy that is itself
    channels-last, so the conv runs in the fast NHWC kernels and the output
    comes back channels-last.

    Args:
        x (Tensor): Input of shape (B, C, H, W).
        kernel (Tensor): Kernels of shape (B * C, 1, k, k).
        bias (Tensor, optional): Bias of shape (B * C, ).
        padding (int): Zero padding.

    Returns:
        Tensor: (B, C, H', W'), channels-last when ``x`` is.
    """
    B, C, H, W = x.shape
    if x.is_contiguous() or not x.is_contiguous(
            memory_format=torch.channels_last):
        out = F.conv2d(
            x.reshape(1, B * C, H, W), kernel, bias, padding=padding,
            groups=B * C)
        return out.view(B, C, *out.shape[-2:])
    folded = x.permute(2, 3, 0, 1).reshape(1, H, W, B * C)
    out = F.conv2d(
        folded.permute(0, 3, 1, 2), kernel, bias, padding=padding,
        groups=B * C)
    Ho, Wo = out.shape[-2:]
    out = out.permute(0, 2, 3, 1).reshape(Ho, Wo, B, C)
    return out.permute(2, 3, 0, 1).contiguous(
        memory_format=torch.channels_last)


class DynamicDepthwiseConv2d(nn.Module):
    """Homogeneous dynamic depth-wise convolution (the paper's D-DW).

    One k x k kernel per channel and per image, predicted from the globally
    pooled input in the manner of SE: pool -> 1x1 conv (C -> C/r, no bias) ->
    norm -> ReLU -> 1x1 conv (C/r -> C*k*k). A learned static bias is added to
    the output. The whole batch runs as one grouped convolution (see
    :func:`batched_depthwise_conv`).

    Args:
        channels (int): Number of input and output channels.
        kernel_size (int): Size of the depth-wise kernel. Defaults to 7.
        reduction (int): Channel reduction of the kernel generator.
            Defaults to 4.
        norm_cfg (dict): Config of the generator's norm layer.
            Defaults to ``dict(type='BN')``.
    """

    def __init__(self, channels, kernel_size=7, reduction=4,
                 norm_cfg=dict(type='BN')):
        super().__init__()
        self.channels = channels
        self.kernel_size = kernel_size
        hidden = channels // reduction
        self.conv1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.bn = build_norm_layer(norm_cfg, hidden)[1]
        self.conv2 = nn.Conv2d(hidden, channels * kernel_size**2, 1)
        self.bias = nn.Parameter(torch.zeros(channels))

    def predict_kernel(self, x):
        """Per-image kernels of shape (B * C, 1, k, k)."""
        context = F.adaptive_avg_pool2d(x, 1)
        context = F.relu(self.bn(self.conv1(context)))
        kernel = self.conv2(context)
        return kernel.reshape(-1, 1, self.kernel_size, self.kernel_size)

    def forward(self, x):
        kernel = self.predict_kernel(x).to(x.dtype)
        bias = self.bias.to(x.dtype).repeat(x.shape[0])
        return batched_depthwise_conv(x, kernel, bias, self.kernel_size // 2)


def _row_chunks(height, row_elements, max_rows=None):
    """Split ``height`` rows into about equal chunks of at most
    ``_CHUNK_ELEMENTS`` (and ``max_rows``)."""
    rows = _CHUNK_ELEMENTS // max(1, row_elements)
    if max_rows is not None:
        rows = min(rows, max_rows)
    num_chunks = -(-height // max(1, rows))
    rows = -(-height // num_chunks)
    return [(r, min(height, r + rows)) for r in range(0, height, rows)]


# The k*k passes of the inhomogeneous dynamic conv run on "flat rows":
# every (H, W) plane is padded by k // 2 rows above and below (but not on
# the sides) and flattened, with k // 2 guard elements at both ends. A
# horizontal shift is then a shift of the flat index, so every pass is one
# long contiguous run per plane (a 1-D shift of the whole row chunk) rather
# than W-long runs. Taps that cross the left/right border read the
# neighbouring row there; their kernel values are masked to zero instead.


def _flat_rows(x, groups, pad, scale=None):
    """``x`` (B, C, H, W), any memory format, as zero-padded flat rows
    (B, G, C // G, (H + 2 pad) * W + 2 pad), optionally times a per-channel
    ``scale`` in the same pass."""
    B, C, H, W = x.shape
    length = (H + 2 * pad) * W + 2 * pad
    flat = x.new_empty(B, C, length)
    inner = pad + pad * W
    flat[..., :inner].zero_()
    flat[..., inner + H * W:].zero_()
    interior = flat[..., inner:inner + H * W].view(B, C, H, W)
    if scale is None:
        interior.copy_(x)
    else:
        torch.mul(x, scale.view(1, C, 1, 1), out=interior)
    return flat.view(B, groups, C // groups, length)


def _flat_interior(flat, pad, H, W):
    """The (B, C, H, W) interior of flat rows."""
    B, G, Cg = flat.shape[:3]
    inner = pad + pad * W
    return flat[..., inner:inner + H * W].reshape(B, G * Cg, H, W)


def _column_mask(kernel_size, width, like):
    """(k, W): 1 where the horizontal tap ``dx`` of column ``w`` stays
    inside the row."""
    pad = kernel_size // 2
    cols = torch.arange(width, device=like.device)
    taps = torch.arange(kernel_size, device=like.device).view(-1, 1) - pad
    return ((cols + taps >= 0) & (cols + taps < width)).to(like.dtype)


def _masked(kernels, mask, inplace=False):
    """Kernels (B, G, k*k, r, W) times the column mask, as (B, G, k*k, r*W).
    """
    B, G, k2, r, W = kernels.shape
    k = mask.shape[0]
    mask = mask.view(1, 1, 1, k, 1, W)
    if inplace:
        kernels.view(B, G, k, k, r, W).mul_(mask)
        return kernels.view(B, G, k2, r * W)
    return (kernels.view(B, G, k, k, r, W) * mask).view(B, G, k2, r * W)


def _accumulate_offsets(out, flat, kernels, row0, width, kernel_size,
                        bias=None):
    """``out = bias + sum_i flat[offset i] * kernels[:, :, i]`` over the row
    chunk that starts at row ``row0``.

    Args:
        out (Tensor): (B, G, C/G, n) output view (n = rows * W),
            overwritten.
        flat (Tensor): (B, G, C/G, L) input as flat rows.
        kernels (Tensor): (B, G, k*k, n) column-masked kernels.
        row0 (int): First output row of the chunk.
        width (int): W.
        kernel_size (int): k.
        bias (Tensor, optional): Broadcastable to ``out``.
    """
    n = out.shape[-1]
    for i in range(kernel_size**2):
        dy, dx = divmod(i, kernel_size)
        start = (row0 + dy) * width + dx
        window, weight = flat[..., start:start + n], kernels[:, :, i:i + 1]
        if i:
            out.addcmul_(window, weight)
        elif bias is None:
            torch.mul(window, weight, out=out)
        else:
            torch.addcmul(bias, window, weight, out=out)


class InhomogeneousDynamicConvFunction(torch.autograd.Function):
    """Spatially varying depth-wise conv, one kernel per position and group.

    ``weight`` is (B, G, k*k, H, W). Both passes loop over the k*k kernel
    offsets inside row chunks that fit a CPU core's cache, on flat rows (see
    :func:`_flat_rows`), so neither materialises an unfolded
    (B, C, k*k, H, W) tensor and every pass is a long contiguous loop.
    """

    @staticmethod
    def forward(ctx, x, weight):
        ctx.save_for_backward(x, weight)
        B, C, H, W = x.shape
        G, k2 = weight.shape[1:3]
        k = math.isqrt(k2)
        pad = k // 2
        flat = _flat_rows(x, G, pad)
        mask = _column_mask(k, W, weight)
        out = x.new_empty(B, G, C // G, H * W)
        for r0, r1 in _row_chunks(H, B * C * W):
            kernels = _masked(weight[..., r0:r1, :], mask)
            _accumulate_offsets(out[..., r0 * W:r1 * W], flat, kernels, r0,
                                W, k)
        return out.view(B, C, H, W)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        B, C, H, W = x.shape
        G, k2 = weight.shape[1:3]
        k = math.isqrt(k2)
        pad = k // 2
        need_x, need_w = ctx.needs_input_grad[:2]
        g_out = grad_out.contiguous().view(B, G, C // G, H * W)
        mask = _column_mask(k, W, weight)
        grad_flat = grad_w = flat = None
        if need_x:
            grad_flat = x.new_zeros(B, G, C // G, (H + 2 * pad) * W + 2 * pad)
        if need_w:
            flat = _flat_rows(x, G, pad)
            grad_w = torch.empty_like(weight)
        for r0, r1 in _row_chunks(H, 2 * B * C * W):
            n = (r1 - r0) * W
            g = g_out[..., r0 * W:r1 * W]
            kernels = _masked(weight[..., r0:r1, :], mask) if need_x else None
            product = g.new_empty(g.shape) if need_w else None
            for i in range(k2):
                dy, dx = divmod(i, k)
                start = (r0 + dy) * W + dx
                if need_x:
                    grad_flat[..., start:start + n].addcmul_(
                        g, kernels[:, :, i:i + 1])
                if need_w:
                    torch.mul(g, flat[..., start:start + n], out=product)
                    torch.sum(product, 2,
                              out=grad_w[:, :, i, r0:r1].flatten(2))
            if need_w:
                # Masked taps did not take part in the forward pass.
                _masked(grad_w[..., r0:r1, :], mask, inplace=True)
        grad_x = _flat_interior(grad_flat, pad, H, W) if need_x else None
        return grad_x, grad_w


def i_dynamic_conv_flop_handle(inputs, outputs):
    """mmengine FLOP (MAC) counter: k*k MACs per output element, like a
    static depth-wise conv."""
    from mmengine.analysis.jit_handles import get_shape
    x_shape, w_shape = get_shape(inputs[0]), get_shape(inputs[1])
    return math.prod(x_shape) * w_shape[2]


def _i_dynamic_dtypes(x, weight):
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


def inhomogeneous_dynamic_conv(x, weight, kernel_size):
    """Depth-wise conv with a kernel per position, shared by channel groups.

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
    if C % (weight.shape[1] // k2):
        raise ValueError(f'{C} channels cannot be split into '
                         f'{weight.shape[1] // k2} groups')
    out_dtype, compute_dtype = _i_dynamic_dtypes(x, weight)
    weight = weight.reshape(B, -1, k2, H, W)
    out = InhomogeneousDynamicConvFunction.apply(
        x.to(compute_dtype).contiguous(),
        weight.to(compute_dtype).contiguous())
    return out.to(out_dtype)


@torch.no_grad()
def generate_and_apply_i_dynamic(x, hidden, weight, bias, kernel_size,
                                 groups, input_scale=None, out_bias=None):
    """Inference form of the inhomogeneous dynamic conv, without autograd.

    The kernels are generated from ``hidden`` by the last 1x1 conv of the
    generator (``weight``, ``bias``) one row chunk at a time and applied at
    once, so the (B, G*k*k, H, W) kernel tensor, G*k*k/C times larger than
    the input (16x at the first stage of DWNet-T), is never held whole and
    each chunk is used while it is in cache.

    Args:
        x (Tensor): Input (B, C, H, W), any memory format.
        hidden (Tensor): Generator features (B, H, W, C_h), channels last.
        weight (Tensor): Last generator layer, (G*k*k, C_h).
        bias (Tensor, optional): Its bias, (G*k*k, ).
        kernel_size (int): k.
        groups (int): G.
        input_scale (Tensor, optional): (C, ) factors of the input of the
            kernel application (not of ``hidden``). Defaults to None.
        out_bias (Tensor, optional): (C, ) bias added to the output.
            Defaults to None.

    Returns:
        Tensor: (B, C, H, W), contiguous, in the dtype rules of
        :func:`inhomogeneous_dynamic_conv`.
    """
    B, C, H, W = x.shape
    k2 = kernel_size**2
    pad = kernel_size // 2
    out_dtype, dtype = _i_dynamic_dtypes(x, weight)
    if input_scale is not None:
        input_scale = input_scale.to(dtype)
    flat = _flat_rows(x.to(dtype), groups, pad, input_scale)
    if out_bias is not None:
        out_bias = out_bias.to(dtype).view(1, groups, -1, 1)
    hidden = hidden.to(dtype).reshape(B, H * W, -1)
    weight = weight.to(dtype)
    bias = bias.to(dtype).view(1, -1, 1) if bias is not None else None
    mask = _column_mask(kernel_size, W, weight)
    out = x.new_empty(B, groups, C // groups, H * W, dtype=dtype)
    # Kernel chunks no larger than the input bound the extra memory.
    for r0, r1 in _row_chunks(H, B * C * W, C * H // (groups * k2)):
        chunk_hidden = hidden[:, r0 * W:r1 * W].transpose(1, 2)
        if bias is None:
            kernels = torch.matmul(weight, chunk_hidden)
        else:
            kernels = torch.baddbmm(bias, weight.expand(B, -1, -1),
                                    chunk_hidden)
        kernels = kernels.view(B, groups, k2, r1 - r0, W)
        kernels = _masked(kernels, mask, inplace=True)
        _accumulate_offsets(out[..., r0 * W:r1 * W], flat, kernels, r0, W,
                            kernel_size, out_bias)
    return out.view(B, C, H, W).to(out_dtype)


def _needs_grad(*tensors):
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


class InhomogeneousDynamicConv2d(nn.Module):
    """Inhomogeneous dynamic depth-wise convolution (the paper's I-Dynamic).

    A k x k kernel is predicted at every position from the local features
    (1x1 conv C -> C/r -> norm -> ReLU -> 1x1 conv -> k*k*G) and shared by
    the channels of each of the G groups. Plain PyTorch: runs on any device
    and dtype, and is differentiable. Without gradients, the kernels are
    generated and applied chunk by chunk
    (:func:`generate_and_apply_i_dynamic`), which bounds the memory.

    Args:
        channels (int): Number of input and output channels.
        kernel_size (int): Size of the kernel. Defaults to 7.
        groups (int): Number of channel groups sharing a kernel.
            Defaults to 32.
        reduction (int): Channel reduction of the kernel generator.
            Defaults to 4.
        norm_cfg (dict): Config of the generator's norm layer.
            Defaults to ``dict(type='BN')``.
    """

    def __init__(self, channels, kernel_size=7, groups=32, reduction=4,
                 norm_cfg=dict(type='BN')):
        super().__init__()
        if channels % groups:
            raise ValueError(f'channels ({channels}) must be divisible by '
                             f'groups ({groups})')
        self.kernel_size = kernel_size
        self.groups = groups
        hidden = channels // reduction
        self.conv1 = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            build_norm_layer(norm_cfg, hidden)[1],
            nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(
            nn.Conv2d(hidden, kernel_size**2 * groups, 1))

    def hidden_features(self, x):
        """Generator features after norm and ReLU, (B, H, W, C/r)."""
        conv, norm, act = self.conv1
        hidden = F.linear(x.permute(0, 2, 3, 1), conv.weight.flatten(1),
                          conv.bias)
        return act(norm(hidden.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)

    def forward(self, x):
        if torch.jit.is_tracing():
            # The plain module form, for mmengine's FLOP counter.
            weight = self.conv2(self.conv1(x))
            return inhomogeneous_dynamic_conv(x, weight, self.kernel_size)
        hidden = self.hidden_features(x)
        conv2 = self.conv2[0]
        weight = conv2.weight.flatten(1)
        if not _needs_grad(x, hidden, weight, conv2.bias):
            return generate_and_apply_i_dynamic(x, hidden, weight, conv2.bias,
                                                self.kernel_size, self.groups)
        B, H, W, _ = hidden.shape
        # (G*k*k, C/r) @ (B, C/r, HW): kernels come out in the (B, G*k*k,
        # H, W) layout of the op, with no transposing copy.
        kernels = torch.matmul(weight, hidden.reshape(B, H * W, -1).transpose(
            1, 2))
        if conv2.bias is not None:
            kernels = kernels + conv2.bias.view(1, -1, 1)
        return inhomogeneous_dynamic_conv(x, kernels.view(B, -1, H, W),
                                          self.kernel_size)


def _register_flop_counter():
    # mmengine's FlopAnalyzer (used by mmdet/mmseg/mmpretrain get_flops
    # tools too) skips autograd Functions; teach it this one.
    from mmengine.analysis import complexity_analysis
    name = 'prim::PythonOp.' + InhomogeneousDynamicConvFunction.__name__
    complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS[name] = \
        i_dynamic_conv_flop_handle


_register_flop_counter()
