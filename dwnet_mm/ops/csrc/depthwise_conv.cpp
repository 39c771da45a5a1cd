// Depth-wise k x k convolution ("same" zero padding, odd k) on NHWC float
// tensors with (N, K, K, C) kernels, one per image and channel (the dynamic
// conv; the static conv runs in PyTorch's), for x86-64 CPUs with AVX2 and
// FMA. Both passes work on one output row at a
// time, so the K input rows they read stay in the core's cache, and skip
// the taps that fall into the zero padding instead of padding a copy:
// * the forward keeps 8 output pixels x 8 channels in registers over all
//   K*K taps and loads each input vector once per kernel row;
// * the kernel gradient keeps the K taps of one kernel row in registers
//   along the row and adds them to its image's (K, K, C) sum.
// The input gradient is the forward pass with flipped kernels.
#if !defined(__x86_64__)
#error "the dwnet_mm CPU kernels are written for x86-64 (AVX2 + FMA)"
#endif

#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>

#include "common.h"

namespace {

using dwnet_mm::check_input;
using dwnet_mm::check_nhwc;
using dwnet_mm::kLanes;

// Output pixels per forward block: 8 accumulators hide the FMA latency,
// and with the K taps and one input vector they fill the 16 registers.
constexpr int kPixels = 8;

// T output pixels of one row, 8 channels. x points at input row
// h + i0 - K/2, column w0 - K/2 (the first tap of the first pixel, which
// may lie in the padding: it is not read); kernel rows i0 .. i1 - 1 are
// applied. Input columns q (0 <= q < K + T - 1) outside [q0, q1) are padding.
template <int K, int T, bool kEdge>
__attribute__((target("avx2,fma"))) inline void forward_pixels(
    const float* x, const float* w, int64_t row_stride, int64_t C, int i0,
    int i1, int q0, int q1, const float* bias, bool relu, float* out) {
  const __m256 start = bias ? _mm256_loadu_ps(bias) : _mm256_setzero_ps();
  __m256 acc[T];
#pragma GCC unroll 8
  for (int t = 0; t < T; ++t) acc[t] = start;
#pragma GCC unroll 1
  for (int i = i0; i < i1; ++i) {
    __m256 taps[K];
    const float* wp = w + i * K * C;
#pragma GCC unroll 16
    for (int j = 0; j < K; ++j) {
      taps[j] = _mm256_loadu_ps(wp);
      wp += C;
    }
    const float* xp = x + (i - i0) * row_stride;
#pragma GCC unroll 32
    for (int q = 0; q < K + T - 1; ++q) {
      if (!kEdge || (q >= q0 && q < q1)) {
        const __m256 xv = _mm256_loadu_ps(xp);
#pragma GCC unroll 8
        for (int t = 0; t < T; ++t) {
          const int j = q - t;
          if (j >= 0 && j < K) acc[t] = _mm256_fmadd_ps(xv, taps[j], acc[t]);
        }
      }
      xp += C;
    }
  }
  const __m256 zero = _mm256_setzero_ps();
#pragma GCC unroll 8
  for (int t = 0; t < T; ++t)
    _mm256_storeu_ps(out + t * C, relu ? _mm256_max_ps(acc[t], zero) : acc[t]);
}

// T output pixels from column w0 of output row h, all channels.
template <int K, int T>
__attribute__((target("avx2,fma"))) inline void forward_block(
    const float* x_image, const float* w, int64_t H, int64_t W, int64_t C,
    int64_t h, int64_t w0, const float* bias, bool relu, float* out) {
  constexpr int p = K / 2;
  const int i0 = static_cast<int>(std::max<int64_t>(0, p - h));
  const int i1 = static_cast<int>(std::min<int64_t>(K, H + p - h));
  const int q0 = static_cast<int>(std::max<int64_t>(0, p - w0));
  const int q1 = static_cast<int>(std::min<int64_t>(K + T - 1, W + p - w0));
  const int64_t row_stride = W * C;
  // Pointer arithmetic only: the padding columns are never dereferenced.
  const float* x = x_image + (h + i0 - p) * row_stride + (w0 - p) * C;
  const bool edge = q0 > 0 || q1 < K + T - 1;
  for (int64_t c = 0; c < C; c += kLanes) {
    const float* b = bias ? bias + c : nullptr;
    if (edge)
      forward_pixels<K, T, true>(x + c, w + c, row_stride, C, i0, i1, q0, q1,
                                 b, relu, out + c);
    else
      forward_pixels<K, T, false>(x + c, w + c, row_stride, C, i0, i1, q0,
                                  q1, b, relu, out + c);
  }
}

// Output rows [begin, end) of the N * H rows.
template <int K>
__attribute__((target("avx2,fma"))) void forward_rows(
    const float* x, const float* weight, const float* bias, float* out,
    int64_t H, int64_t W, int64_t C, bool relu, int64_t begin,
    int64_t end) {
  for (int64_t r = begin; r < end; ++r) {
    const int64_t n = r / H, h = r % H;
    const float* xn = x + n * H * W * C;
    const float* w = weight + n * K * K * C;
    float* o = out + r * W * C;
    int64_t w0 = 0;
    for (; w0 + kPixels <= W; w0 += kPixels)
      forward_block<K, kPixels>(xn, w, H, W, C, h, w0, bias, relu,
                                o + w0 * C);
    switch (W - w0) {
#define DWNET_TAIL(T)                                                \
  case T:                                                            \
    forward_block<K, T>(xn, w, H, W, C, h, w0, bias, relu, o + w0 * C); \
    break;
      DWNET_TAIL(1) DWNET_TAIL(2) DWNET_TAIL(3) DWNET_TAIL(4) DWNET_TAIL(5)
      DWNET_TAIL(6) DWNET_TAIL(7)
#undef DWNET_TAIL
      default: break;
    }
  }
}

// sum[i, j, c] += sum_w grad[h, w, c] * x[h + i - K/2, w + j - K/2, c] for
// output row h of one image (zero outside x).
template <int K>
__attribute__((target("avx2,fma"))) void add_row_weight_grad(
    const float* x_image, const float* grad_row, int64_t H, int64_t W,
    int64_t C, int64_t h, float* sum) {
  constexpr int p = K / 2;
  for (int i = 0; i < K; ++i) {
    const int64_t hi = h + i - p;
    if (hi < 0 || hi >= H) continue;
    const float* xi = x_image + hi * W * C;
    for (int64_t c = 0; c < C; c += kLanes) {
      __m256 acc[K];
#pragma GCC unroll 16
      for (int j = 0; j < K; ++j) acc[j] = _mm256_setzero_ps();
      for (int64_t w = 0; w < W; ++w) {
        const __m256 gv = _mm256_loadu_ps(grad_row + w * C + c);
        const float* xq = xi + (w - p) * C + c;
        if (w >= p && w + p < W) {
#pragma GCC unroll 16
          for (int j = 0; j < K; ++j)
            acc[j] = _mm256_fmadd_ps(gv, _mm256_loadu_ps(xq + j * C), acc[j]);
        } else {
#pragma GCC unroll 16
          for (int j = 0; j < K; ++j)
            if (w + j - p >= 0 && w + j - p < W)
              acc[j] =
                  _mm256_fmadd_ps(gv, _mm256_loadu_ps(xq + j * C), acc[j]);
        }
      }
      float* s = sum + i * K * C + c;
#pragma GCC unroll 16
      for (int j = 0; j < K; ++j)
        _mm256_storeu_ps(s + j * C,
                         _mm256_add_ps(_mm256_loadu_ps(s + j * C), acc[j]));
    }
  }
}

// Images [begin, end): each image's rows add to its (K, K, C) sum.
template <int K>
__attribute__((target("avx2,fma"))) void weight_grad_images(
    const float* x, const float* grad, int64_t H, int64_t W, int64_t C,
    int64_t begin, int64_t end, float* sums) {
  for (int64_t n = begin; n < end; ++n)
    for (int64_t h = 0; h < H; ++h)
      add_row_weight_grad<K>(x + n * H * W * C, grad + (n * H + h) * W * C,
                             H, W, C, h, sums + n * K * K * C);
}

}  // namespace

// out[n, h, w, c] = bias[c] + sum_ij x[n, h + i - k//2, w + j - k//2, c]
//                   * weight[n, i, j, c], then ReLU if ``relu``.
at::Tensor depthwise_conv_nhwc(const at::Tensor& x, const at::Tensor& weight,
                               const c10::optional<at::Tensor>& bias,
                               bool relu) {
  TORCH_CHECK(dwnet_mm::cpu_supported(), "this CPU lacks AVX2/FMA");
  check_nhwc(x, "x");
  check_input(weight, "weight");
  TORCH_CHECK(weight.dim() == 4, "weight must be (N, K, K, C)");
  const int64_t K = weight.size(1);
  TORCH_CHECK(weight.size(2) == K && weight.size(3) == x.size(3) &&
                  weight.size(0) == x.size(0),
              "weight ", weight.sizes(), " does not fit x ", x.sizes());
  const float* bias_ptr =
      dwnet_mm::optional_channels(bias, x.size(3), "bias");
  const int64_t N = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
  at::Tensor out = at::empty_like(x);
  const float* xp = x.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  float* op = out.data_ptr<float>();
  DWNET_DISPATCH_K(K, at::parallel_for(0, N * H, 1, [&](int64_t b,
                                                        int64_t e) {
    // Lambdas do not inherit target attributes: the body is a function.
    forward_rows<kK>(xp, wp, bias_ptr, op, H, W, C, relu, b, e);
  }));
  return out;
}

// The kernel gradient: (N, K, K, C).
at::Tensor depthwise_conv_nhwc_weight_grad(const at::Tensor& x,
                                           const at::Tensor& grad,
                                           int64_t K) {
  TORCH_CHECK(dwnet_mm::cpu_supported(), "this CPU lacks AVX2/FMA");
  check_nhwc(x, "x");
  check_nhwc(grad, "grad");
  TORCH_CHECK(x.sizes() == grad.sizes(), "x and grad differ in shape");
  const int64_t N = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
  const float* xp = x.data_ptr<float>();
  const float* gp = grad.data_ptr<float>();
  // An image goes to one thread: no two threads add to a sum.
  at::Tensor out = at::zeros({N, K, K, C}, x.options());
  float* op = out.data_ptr<float>();
  DWNET_DISPATCH_K(K, at::parallel_for(0, N, 1, [&](int64_t b, int64_t e) {
    weight_grad_images<kK>(xp, gp, H, W, C, b, e, op);
  }));
  return out;
}

void register_depthwise_conv(pybind11::module& m) {
  m.def("depthwise_conv_nhwc", &depthwise_conv_nhwc, py::arg("x"),
        py::arg("weight"), py::arg("bias") = py::none(),
        py::arg("relu") = false);
  m.def("depthwise_conv_nhwc_weight_grad", &depthwise_conv_nhwc_weight_grad,
        py::arg("x"), py::arg("grad"), py::arg("kernel_size"));
}
