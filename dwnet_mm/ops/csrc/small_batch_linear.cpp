// A linear layer on a few rows (the dynamic conv's kernel generator: one
// row per image, C*k*k outputs), forward and backward, for x86-64 CPUs with
// AVX2 and FMA. With 8 rows, BLAS runs these products at 5-15% of its peak
// and reads or writes the weight (up to 29 MB in D-DWNet-T) once per product;
// here the backward makes grad_weight, grad_bias and grad_input in one pass
// over the weight.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>

#include "common.h"

namespace {

using dwnet_mm::check_input;
using dwnet_mm::kLanes;

constexpr int64_t kMaxRows = 64;  // rows (batch) the kernels take
constexpr int64_t kRowTile = 16;  // weight rows per grad_input tile

__attribute__((target("avx2,fma"))) inline float horizontal_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v),
                        _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma"))) inline float dot(const float* a,
                                                    const float* b,
                                                    int64_t K) {
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(),
                   _mm256_setzero_ps(), _mm256_setzero_ps()};
  int64_t k = 0;
  for (; k + 4 * kLanes <= K; k += 4 * kLanes)
    for (int j = 0; j < 4; ++j)
      acc[j] = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + j * kLanes),
                               _mm256_loadu_ps(b + k + j * kLanes), acc[j]);
  for (; k + kLanes <= K; k += kLanes)
    acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k),
                             acc[0]);
  float sum = horizontal_sum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]),
                                           _mm256_add_ps(acc[2], acc[3])));
  for (; k < K; ++k) sum += a[k] * b[k];
  return sum;
}

// out[k] (+)= sum over t < count of coef[t * coef_stride] *
// rows[t * row_stride + k], for k < K: four independent accumulators per
// step, so the FMA chain over t does not wait on its own latency.
__attribute__((target("avx2,fma"))) inline void weighted_row_sum(
    const float* coef, int64_t coef_stride, const float* rows,
    int64_t row_stride, int64_t count, float* out, int64_t K,
    bool accumulate) {
  int64_t k = 0;
  for (; k + 4 * kLanes <= K; k += 4 * kLanes) {
    __m256 acc[4];
    for (int j = 0; j < 4; ++j)
      acc[j] = accumulate ? _mm256_loadu_ps(out + k + j * kLanes)
                          : _mm256_setzero_ps();
    for (int64_t t = 0; t < count; ++t) {
      const __m256 c = _mm256_set1_ps(coef[t * coef_stride]);
      const float* row = rows + t * row_stride + k;
      for (int j = 0; j < 4; ++j)
        acc[j] = _mm256_fmadd_ps(c, _mm256_loadu_ps(row + j * kLanes), acc[j]);
    }
    for (int j = 0; j < 4; ++j) _mm256_storeu_ps(out + k + j * kLanes, acc[j]);
  }
  for (; k + kLanes <= K; k += kLanes) {
    __m256 acc = accumulate ? _mm256_loadu_ps(out + k) : _mm256_setzero_ps();
    for (int64_t t = 0; t < count; ++t)
      acc = _mm256_fmadd_ps(_mm256_set1_ps(coef[t * coef_stride]),
                            _mm256_loadu_ps(rows + t * row_stride + k), acc);
    _mm256_storeu_ps(out + k, acc);
  }
  for (; k < K; ++k) {
    float sum = accumulate ? out[k] : 0.f;
    for (int64_t t = 0; t < count; ++t)
      sum += coef[t * coef_stride] * rows[t * row_stride + k];
    out[k] = sum;
  }
}

void check_rows(const at::Tensor& x) {
  check_input(x, "x");
  TORCH_CHECK(x.dim() == 2, "x must be (B, in_features), got ", x.sizes());
  TORCH_CHECK(x.size(0) >= 1 && x.size(0) <= kMaxRows, "x has ", x.size(0),
              " rows; the small-batch linear kernel takes 1 to ", kMaxRows,
              " (use F.linear for more)");
}

void check_weight(const at::Tensor& weight, const at::Tensor& x) {
  check_input(weight, "weight");
  TORCH_CHECK(weight.dim() == 2 && weight.size(1) == x.size(1),
              "weight must be (out_features, ", x.size(1), "), got ",
              weight.sizes());
}

// Columns [begin, end) of out (B, N) = x (B, K) @ weight (N, K)^T + bias.
__attribute__((target("avx2,fma"))) void forward_rows(
    const float* xp, const float* wp, const float* b, float* op, int64_t B,
    int64_t K, int64_t N, int64_t begin, int64_t end) {
  for (int64_t n = begin; n < end; ++n) {
    const float* w = wp + n * K;
    const float shift = b ? b[n] : 0.f;
    for (int64_t r = 0; r < B; ++r)
      op[r * N + n] = dot(w, xp + r * K, K) + shift;
  }
}

// out (B, N) = x (B, K) @ weight (N, K)^T + bias.
at::Tensor small_batch_linear(const at::Tensor& x, const at::Tensor& weight,
                              const c10::optional<at::Tensor>& bias) {
  check_rows(x);
  check_weight(weight, x);
  const int64_t B = x.size(0), K = x.size(1), N = weight.size(0);
  const float* b = dwnet_mm::optional_channels(bias, N, "bias");
  auto out = at::empty({B, N}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, N, 64, [&](int64_t begin, int64_t end) {
    forward_rows(xp, wp, b, op, B, K, N, begin, end);
  });
  return out;
}

// Rows [begin, end) of grad_weight and grad_bias, and their share of
// grad_x added into gx (this thread's partial sum); null outputs skipped.
__attribute__((target("avx2,fma"))) void backward_rows(
    const float* gp, const float* xp, const float* wp, float* gw, float* gb,
    float* gx, int64_t B, int64_t K, int64_t N, int64_t begin, int64_t end) {
  float g[kRowTile][kMaxRows];  // this tile's grad, row-major per n
  for (int64_t n0 = begin; n0 < end; n0 += kRowTile) {
    const int64_t rows = std::min(kRowTile, end - n0);
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t r = 0; r < B; ++r) g[i][r] = gp[r * N + n0 + i];
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t n = n0 + i;
      if (gb) {
        float sum = 0.f;
        for (int64_t r = 0; r < B; ++r) sum += g[i][r];
        gb[n] = sum;
      }
      if (gw) weighted_row_sum(g[i], 1, xp, K, B, gw + n * K, K, false);
    }
    if (!gx) continue;
    // grad_x[r] += sum over the tile's rows of g[i][r] * weight[n0 + i],
    // accumulated in registers across the tile.
    for (int64_t r = 0; r < B; ++r)
      weighted_row_sum(&g[0][r], kMaxRows, wp + n0 * K, K, rows, gx + r * K,
                       K, true);
  }
}

// grad_x (B, K), grad_weight (N, K) and grad_bias (N, ) of
// small_batch_linear from grad (B, N); undefined where not asked for.
std::vector<at::Tensor> small_batch_linear_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight,
    bool need_x, bool need_weight, bool need_bias) {
  check_rows(x);
  check_weight(weight, x);
  check_input(grad, "grad");
  const int64_t B = x.size(0), K = x.size(1), N = weight.size(0);
  TORCH_CHECK(grad.dim() == 2 && grad.size(0) == B && grad.size(1) == N,
              "grad must be (", B, ", ", N, "), got ", grad.sizes());
  at::Tensor grad_x, grad_weight, grad_bias, partial_x;
  const int threads = at::get_num_threads();
  if (need_x) partial_x = at::zeros({threads, B, K}, x.options());
  if (need_weight) grad_weight = at::empty({N, K}, x.options());
  if (need_bias) grad_bias = at::empty({N}, x.options());
  const float* gp = grad.data_ptr<float>();
  const float* xp = x.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  float* gw = need_weight ? grad_weight.data_ptr<float>() : nullptr;
  float* gb = need_bias ? grad_bias.data_ptr<float>() : nullptr;
  float* px = need_x ? partial_x.data_ptr<float>() : nullptr;
  at::parallel_for(0, N, kRowTile, [&](int64_t begin, int64_t end) {
    float* gx = px ? px + at::get_thread_num() * B * K : nullptr;
    backward_rows(gp, xp, wp, gw, gb, gx, B, K, N, begin, end);
  });
  if (need_x) grad_x = partial_x.sum(0);
  return {grad_x, grad_weight, grad_bias};
}

}  // namespace

void register_small_batch_linear(pybind11::module& m) {
  m.def("small_batch_linear", &small_batch_linear, py::arg("x"),
        py::arg("weight"), py::arg("bias") = py::none(),
        "x (B, K) @ weight (N, K)^T + bias for B <= 64");
  m.def("small_batch_linear_backward", &small_batch_linear_backward,
        py::arg("grad"), py::arg("x"), py::arg("weight"), py::arg("need_x"),
        py::arg("need_weight"), py::arg("need_bias"),
        "grad_x, grad_weight and grad_bias of small_batch_linear");
}
