"""Triton kernels of the inhomogeneous dynamic depth-wise conv (see
``triton_i_dynamic_conv``, which imports this module on first use)."""
import triton
import triton.language as tl


# tile: this program's block: pixels (h, w, mask), channels (index, mask),
# the offsets of their rows and of the group's first kernel tap.
@triton.jit
def tile(C, H, W, G, K: tl.constexpr, CPG: tl.constexpr,
         CPG_BLOCK: tl.constexpr, BLOCK_P: tl.constexpr):
    image_group = tl.program_id(0)
    n = (image_group // G).to(tl.int64)
    g = image_group % G
    p = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    c = g * CPG + tl.arange(0, CPG_BLOCK)
    HW = H * W
    return (p // W, p % W, p < HW, c, c < (g + 1) * CPG,
            (n * C + c)[:, None] * HW, image_group.to(tl.int64) * K * K * HW)


# shifted_rows: the channel rows of ``ptr`` at pixel (h + dy, w + dx),
# zero outside the map, in ACC; also that pixel's flat index and mask.
@triton.jit
def shifted_rows(ptr, rows, h, w, dy, dx, H, W, p_ok, c_ok,
                 ACC: tl.constexpr):
    hh = h + dy
    ww = w + dx
    q = hh * W + ww
    ok = p_ok & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
    block = tl.load(ptr + rows + q[None, :],
                    mask=c_ok[:, None] & ok[None, :], other=0.).to(ACC)
    return block, q, ok


# out = out_bias + input_scale * sum_t weight[t, p] * x[c, p + offset(t)]
@triton.jit
def forward_kernel(x_ptr, w_ptr, scale_ptr, bias_ptr, out_ptr, C, H, W,
                   G, K: tl.constexpr, CPG: tl.constexpr,
                   CPG_BLOCK: tl.constexpr, BLOCK_P: tl.constexpr,
                   HAS_SCALE: tl.constexpr, HAS_BIAS: tl.constexpr,
                   ACC: tl.constexpr):
    h, w, p_ok, c, c_ok, rows, taps = tile(C, H, W, G, K, CPG, CPG_BLOCK,
                                           BLOCK_P)
    HW = H * W
    p = h * W + w
    acc = tl.zeros((CPG_BLOCK, BLOCK_P), dtype=ACC)
    for t in range(K * K):
        xv, _, _ = shifted_rows(x_ptr, rows, h, w, t // K - K // 2,
                                t % K - K // 2, H, W, p_ok, c_ok, ACC)
        tap = tl.load(w_ptr + taps + t * HW + p, mask=p_ok, other=0.)
        acc += xv * tap.to(ACC)[None, :]
    if HAS_SCALE:
        acc *= tl.load(scale_ptr + c, mask=c_ok, other=0.).to(ACC)[:, None]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + c, mask=c_ok, other=0.).to(ACC)[:, None]
    tl.store(out_ptr + rows + p[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=c_ok[:, None] & p_ok[None, :])


# grad_x and/or grad_w, both in gather form.
@triton.jit
def backward_kernel(x_ptr, w_ptr, grad_out_ptr, grad_x_ptr, grad_w_ptr,
                    C, H, W, G, K: tl.constexpr, CPG: tl.constexpr,
                    CPG_BLOCK: tl.constexpr, BLOCK_P: tl.constexpr,
                    NEED_X: tl.constexpr, NEED_W: tl.constexpr,
                    ACC: tl.constexpr):
    h, w, p_ok, c, c_ok, rows, taps = tile(C, H, W, G, K, CPG, CPG_BLOCK,
                                           BLOCK_P)
    HW = H * W
    p = h * W + w
    block_ok = c_ok[:, None] & p_ok[None, :]
    if NEED_W:
        # grad_w[t, p] = sum_c grad_out[c, p] * x[c, p + offset(t)]
        go = tl.load(grad_out_ptr + rows + p[None, :], mask=block_ok,
                     other=0.).to(ACC)
        for t in range(K * K):
            xv, _, _ = shifted_rows(x_ptr, rows, h, w, t // K - K // 2,
                                    t % K - K // 2, H, W, p_ok, c_ok, ACC)
            tl.store(grad_w_ptr + taps + t * HW + p,
                     tl.sum(go * xv, axis=0).to(grad_w_ptr.dtype.element_ty),
                     mask=p_ok)
    if NEED_X:
        # grad_x[c, p] = sum_t weight[t, p - offset(t)] *
        #                grad_out[c, p - offset(t)]
        acc = tl.zeros((CPG_BLOCK, BLOCK_P), dtype=ACC)
        for t in range(K * K):
            gv, q, ok = shifted_rows(grad_out_ptr, rows, h, w,
                                     K // 2 - t // K, K // 2 - t % K, H, W,
                                     p_ok, c_ok, ACC)
            tap = tl.load(w_ptr + taps + t * HW + q, mask=ok, other=0.)
            acc += gv * tap.to(ACC)[None, :]
        tl.store(grad_x_ptr + rows + p[None, :],
                 acc.to(grad_x_ptr.dtype.element_ty), mask=block_ok)
