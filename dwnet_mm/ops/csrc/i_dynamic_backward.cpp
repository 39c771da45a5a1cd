// The input and kernel gradients of the I-Dynamic conv on NHWC float
// tensors in the interleaved channel order (i_dynamic_conv.cpp), for
// x86-64 CPUs with AVX2 and FMA: one output row per task.
#if !defined(__x86_64__)
#error "the dwnet_mm CPU kernels are written for x86-64 (AVX2 + FMA)"
#endif

#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "common.h"

namespace {

using dwnet_mm::kLanes;

// Input and kernel gradients of the output rows [b, e) (flat N * H rows):
// grad_x[q, c] = sum_t kernels[q - off(t), t, c % G] * grad[q - off(t), c]
// (each pixel gathers from its neighbours: no two threads write one
// value) and grad_k[p, t, g] = sum_s grad[p, s * G + g] * x[p + off(t),
// s * G + g]. Both keep 8 channels (or groups) in a register over the taps
// (or the channels of a group).
__attribute__((target("avx2,fma"))) void backward_rows(
    const float* x, const float* kernels, const float* grad, float* grad_x,
    float* grad_k, int64_t H, int64_t W, int64_t C, int64_t G, int64_t K,
    int64_t b, int64_t e) {
  const int64_t K2 = K * K, S = C / G, P = K / 2;
  std::vector<const float*> tap_kernels(K2), tap_grads(K2);
  for (int64_t row = b; row < e; ++row) {
    const int64_t n = row / H, h = row % H;
    for (int64_t w = 0; w < W; ++w) {
      const int64_t pixel = row * W + w;
      if (grad_x) {
        int taps = 0;  // the neighbours whose tap t lands on this pixel
        for (int64_t i = 0; i < K; ++i) {
          const int64_t hs = h - i + P;
          if (hs < 0 || hs >= H) continue;
          for (int64_t j = 0; j < K; ++j) {
            const int64_t ws = w - j + P;
            if (ws < 0 || ws >= W) continue;
            const int64_t source = (n * H + hs) * W + ws;
            tap_kernels[taps] = kernels + (source * K2 + i * K + j) * G;
            tap_grads[taps++] = grad + source * C;
          }
        }
        float* gx = grad_x + pixel * C;
        for (int64_t c = 0; c < C; c += kLanes) {
          const int64_t g = c % G;
          __m256 acc = _mm256_setzero_ps();
          for (int t = 0; t < taps; ++t)
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(tap_kernels[t] + g),
                                  _mm256_loadu_ps(tap_grads[t] + c), acc);
          _mm256_storeu_ps(gx + c, acc);
        }
      }
      if (!grad_k) continue;
      const float* gp = grad + pixel * C;
      float* gk = grad_k + pixel * K2 * G;
      for (int64_t i = 0; i < K; ++i) {
        const int64_t hx = h + i - P;
        for (int64_t j = 0; j < K; ++j) {
          const int64_t wx = w + j - P;
          float* dst = gk + (i * K + j) * G;
          if (hx < 0 || hx >= H || wx < 0 || wx >= W) {
            std::fill(dst, dst + G, 0.f);
            continue;
          }
          const float* xp = x + ((n * H + hx) * W + wx) * C;
          for (int64_t g = 0; g < G; g += kLanes) {
            __m256 acc = _mm256_setzero_ps();
            for (int64_t s = 0; s < S; ++s)
              acc = _mm256_fmadd_ps(_mm256_loadu_ps(gp + s * G + g),
                                    _mm256_loadu_ps(xp + s * G + g), acc);
            _mm256_storeu_ps(dst + g, acc);
          }
        }
      }
    }
  }
}

}  // namespace

// (grad_x, grad_kernels) of i_dynamic_conv_nhwc with respect to x and the
// generated (pixels, taps, G) kernels, each undefined if not needed.
std::vector<at::Tensor> i_dynamic_backward(const at::Tensor& x,
                                           const at::Tensor& kernels,
                                           const at::Tensor& grad,
                                           int64_t kernel_size, bool need_x,
                                           bool need_kernels) {
  TORCH_CHECK(dwnet_mm::cpu_supported(), "this CPU lacks AVX2/FMA");
  dwnet_mm::check_nhwc(x, "x");
  dwnet_mm::check_nhwc(grad, "grad");
  dwnet_mm::check_input(kernels, "kernels");
  TORCH_CHECK(x.sizes() == grad.sizes(), "x and grad differ in shape");
  const int64_t N = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
  const int64_t K = kernel_size, pixels = N * H * W;
  const int64_t G = kernels.numel() / (pixels * K * K);
  dwnet_mm::check_groups(x, G);
  at::Tensor grad_x = need_x ? at::empty_like(x) : at::Tensor();
  at::Tensor grad_k = need_kernels ? at::empty_like(kernels) : at::Tensor();
  float* gxp = need_x ? grad_x.data_ptr<float>() : nullptr;
  float* gkp = need_kernels ? grad_k.data_ptr<float>() : nullptr;
  at::parallel_for(0, N * H, 1, [&](int64_t b, int64_t e) {
    backward_rows(x.data_ptr<float>(), kernels.data_ptr<float>(),
                  grad.data_ptr<float>(), gxp, gkp, H, W, C, G, K, b, e);
  });
  return {grad_x, grad_k};
}

void register_i_dynamic_backward(pybind11::module& m) {
  m.def("i_dynamic_backward", &i_dynamic_backward, py::arg("x"),
        py::arg("kernels"), py::arg("grad"), py::arg("kernel_size"),
        py::arg("need_x"), py::arg("need_kernels"));
}
