// Inhomogeneous dynamic (I-Dynamic) depth-wise convolution ("same" zero
// padding, odd k) on NHWC float tensors, for x86-64 CPUs with AVX2 and FMA.
//
// Every pixel has its own k x k kernel per channel group, laid out (taps,
// G), so that the G values of one tap are contiguous. The channels are in
// the interleaved order (channel s * G + g is the s-th of group g): eight
// consecutive channels belong to eight consecutive groups, so a kernel
// vector is one plain load, shared by the C / G vectors of those groups.
// The deploy form bakes this order into the weights of the 1x1 convs
// around the op; the training form transposes its activations.
//
// i_dynamic_conv_nhwc, inference and the training forward alike: each
// thread generates the kernels of a chunk of pixels (a library GEMM) and
// applies them while they are in its cache; T pixels of a row are computed
// together, so that each input vector is loaded once for all of them; taps
// in the padding are skipped. The gradients are in i_dynamic_backward.cpp.
#if !defined(__x86_64__)
#error "the dwnet_mm CPU kernels are written for x86-64 (AVX2 + FMA)"
#endif

#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>

#include "common.h"

namespace {

using dwnet_mm::kLanes;

// Pixels per tile: with NB <= 4 channel vectors, 8 accumulators hide the
// FMA latency.
constexpr int kTilePixels = 2;

struct Epilogue {
  const float* scale;
  const float* bias;
  bool relu;
};

// Where one output row's tiles read and write.
struct RowView {
  const float* x;        // input row h - K/2 + i0, column -K/2
  const float* kernels;  // the row's first pixel's (taps, G) kernels
  float* out;            // the row's first output pixel
  int64_t row_stride;    // W * C
  int64_t C, G, W;
  int i0, i1;            // the kernel rows inside the image
};

// NB vectors of 8 channels, the n-th from channel c + n * stride.
template <int NB>
__attribute__((target("avx2,fma"))) inline void store_blocks(
    const __m256* acc, int64_t c, const Epilogue& ep, float* out,
    int64_t stride = kLanes) {
  const __m256 zero = _mm256_setzero_ps();
#pragma GCC unroll 8
  for (int n = 0; n < NB; ++n) {
    __m256 v = acc[n];
    const int64_t cn = c + n * stride;
    if (ep.scale) v = _mm256_mul_ps(v, _mm256_loadu_ps(ep.scale + cn));
    if (ep.bias) v = _mm256_add_ps(v, _mm256_loadu_ps(ep.bias + cn));
    if (ep.relu) v = _mm256_max_ps(v, zero);
    _mm256_storeu_ps(out + cn, v);
  }
}

// The register tile of both channel orders: T pixels from column w0, every
// kernel column inside the row (w0 >= K/2, w0 + T - 1 + K/2 < W), times NB
// input vectors, the n-th at x + n * x_stride. kernel_vector(kr, kq, t, j,
// n) gives the kernel vector of pixel t, tap column j and input vector n,
// from kr, the kernel row of pixel 0 (pixel t's tap (i, j) is at kr + (t *
// K2 + j) * G), or from kq = kr + q * G with q = j + t (the same tap is at
// kq + t * (K2 - 1) * G). Each input vector is loaded once for T pixels.
template <int K, int T, int NB, class KernelVector>
__attribute__((target("avx2,fma"))) inline void accumulate_tile(
    const RowView& row, const float* x, int64_t x_stride,
    const float* kernels, int64_t G, KernelVector kernel_vector,
    __m256 (&acc)[T][NB]) {
#pragma GCC unroll 8
  for (int t = 0; t < T; ++t)
#pragma GCC unroll 8
    for (int n = 0; n < NB; ++n) acc[t][n] = _mm256_setzero_ps();
  const int64_t C = row.C;
  const float* kr = kernels + row.i0 * K * G;
  const float* xr = x;
  for (int i = row.i0; i < row.i1; ++i) {
    const float* xq = xr;
    const float* kq = kr;
#pragma GCC unroll 16
    for (int q = 0; q < K + T - 1; ++q) {
      __m256 xv[NB];
#pragma GCC unroll 8
      for (int n = 0; n < NB; ++n) xv[n] = _mm256_loadu_ps(xq + n * x_stride);
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) {
        const int j = q - t;
        if (j >= 0 && j < K) {
#pragma GCC unroll 8
          for (int n = 0; n < NB; ++n)
            acc[t][n] = _mm256_fmadd_ps(kernel_vector(kr, kq, t, j, n), xv[n],
                                        acc[t][n]);
        }
      }
      xq += C;
      kq += G;
      // One pointer stepped by C, not one precomputed per q (they spill).
      asm volatile("" : "+r"(xq), "+r"(kq));
    }
    xr += row.row_stride;
    kr += K * G;
    asm volatile("" : "+r"(xr), "+r"(kr));
  }
}

// One pixel of either channel order, at any position (the row's edges):
// NB input vectors, the n-th at x + n * x_stride (x at the pixel's column
// of the first kernel row), and kernel_vector(tap, n) the kernel vector of
// input vector n at the tap's offset (i * K + j) * G.
template <int NB, class KernelVector>
__attribute__((target("avx2,fma"))) inline void accumulate_pixel(
    const RowView& row, int K, int64_t w, const float* x, int64_t x_stride,
    KernelVector kernel_vector, __m256 (&acc)[NB]) {
  const int p = K / 2;
  const int j0 = static_cast<int>(std::max<int64_t>(0, p - w));
  const int j1 = static_cast<int>(std::min<int64_t>(K, row.W + p - w));
  const int64_t C = row.C, G = row.G;
#pragma GCC unroll 8
  for (int n = 0; n < NB; ++n) acc[n] = _mm256_setzero_ps();
  // Pointer arithmetic only: padding columns are never dereferenced.
  for (int i = row.i0; i < row.i1; ++i)
    for (int j = j0; j < j1; ++j) {
      const int64_t tap = (i * K + j) * G;
      const float* xp = x + (i - row.i0) * row.row_stride + j * C;
#pragma GCC unroll 8
      for (int n = 0; n < NB; ++n)
        acc[n] = _mm256_fmadd_ps(kernel_vector(tap, n),
                                 _mm256_loadu_ps(xp + n * x_stride), acc[n]);
    }
}

// Calls row_fn(row, w_start, w_end) for the pixels [begin, end) of the flat
// N * H * W pixels, a row piece at a time; kernels holds those from
// kernel_offset on.
template <int K, class RowFn>
__attribute__((target("avx2,fma"))) void for_each_row(
    const float* x, const float* kernels, float* out, int64_t H, int64_t W,
    int64_t C, int64_t G, int64_t kernel_offset, int64_t begin, int64_t end,
    RowFn row_fn) {
  constexpr int p = K / 2;
  int64_t pixel = begin;
  while (pixel < end) {
    const int64_t w_start = pixel % W, h = (pixel / W) % H, n = pixel / (W * H);
    const int64_t w_end = std::min(W, w_start + end - pixel);
    RowView row;
    row.i0 = static_cast<int>(std::max<int64_t>(0, p - h));
    row.i1 = static_cast<int>(std::min<int64_t>(K, H + p - h));
    row.row_stride = W * C;
    row.C = C, row.G = G, row.W = W;
    // Pointer arithmetic only: padding rows are never dereferenced.
    row.x = x + ((n * H + h - p + row.i0) * W - p) * C;
    row.kernels = kernels + (pixel - w_start - kernel_offset) * K * K * G;
    row.out = out + (pixel - w_start) * C;
    row_fn(row, w_start, w_end);
    pixel += w_end - w_start;
  }
}

// ---- the interleaved channel order: channel s * G + g ----------------------

// One pixel (any position), the 8 groups from g0 and NB channel vectors
// from s0: acc[n] covers channels (s0 + n) * G + g0 + [0, 8).
template <int NB>
__attribute__((target("avx2,fma"))) inline void interleaved_pixel(
    const RowView& row, int K, int64_t w, int64_t g0, int64_t s0,
    const Epilogue& ep) {
  const int64_t C = row.C, G = row.G;
  const float* kern = row.kernels + w * K * K * G + g0;
  __m256 acc[NB];
  accumulate_pixel<NB>(
      row, K, w, row.x + w * C + s0 * G + g0, G,
      [kern](int64_t tap, int) __attribute__((target("avx2,fma"))) {
        return _mm256_loadu_ps(kern + tap);
      },
      acc);
  store_blocks<NB>(acc, s0 * G + g0, ep, row.out + w * C, G);
}

// The interleaved order's tile: the 8 groups from g0, NB channel vectors
// from s0. Each kernel vector is one load, shared by the NB input vectors.
template <int K, int T, int NB>
__attribute__((target("avx2,fma"))) inline void interleaved_tile(
    const RowView& row, int64_t w0, int64_t g0, int64_t s0,
    const Epilogue& ep) {
  constexpr int K2 = K * K;
  const int64_t C = row.C, G = row.G;
  const int64_t pixel_step = (K2 - 1) * G;
  __m256 acc[T][NB];
  accumulate_tile<K, T, NB>(
      row, row.x + w0 * C + s0 * G + g0, G, row.kernels + w0 * K2 * G + g0,
      G,
      [pixel_step](const float*, const float* kq, int t, int, int)
          __attribute__((target("avx2,fma"))) {
            return _mm256_loadu_ps(kq + t * pixel_step);
          },
      acc);
#pragma GCC unroll 8
  for (int t = 0; t < T; ++t)
    store_blocks<NB>(acc[t], s0 * G + g0, ep, row.out + (w0 + t) * C, G);
}

// Columns [w, w_end) of a row, channels in the interleaved order; NB
// divides C / G.
template <int K, int NB>
__attribute__((target("avx2,fma"))) void interleaved_row(const RowView& row,
                                                         int64_t w,
                                                         int64_t w_end,
                                                         const Epilogue& ep) {
  constexpr int p = K / 2;
  const int64_t S = row.C / row.G;
  auto pixel = [&](int64_t w) {
    for (int64_t g0 = 0; g0 < row.G; g0 += kLanes)
      for (int64_t s0 = 0; s0 < S; s0 += NB)
        interleaved_pixel<NB>(row, K, w, g0, s0, ep);
  };
  for (; w < w_end && w < p; ++w) pixel(w);
  for (; w + kTilePixels <= w_end && w + kTilePixels - 1 + p < row.W;
       w += kTilePixels)
    for (int64_t g0 = 0; g0 < row.G; g0 += kLanes)
      for (int64_t s0 = 0; s0 < S; s0 += NB)
        interleaved_tile<K, kTilePixels, NB>(row, w, g0, s0, ep);
  for (; w < w_end; ++w) pixel(w);
}

// The most channel vectors per tile (at most 4) that divide S evenly.
int vectors_per_tile(int64_t S) {
  for (int nb = 4; nb > 1; --nb)
    if (S % nb == 0) return nb;
  return 1;
}

// Applies the (pixels, K*K*G) kernels of the flat pixels [begin, end) to x
// (N, H, W, C), writing out's pixels; kernels holds those from
// kernel_offset on.
void apply_chunk(const float* x, const float* kernels, float* out, int64_t N,
                 int64_t H, int64_t W, int64_t C, int64_t G, int64_t K,
                 int64_t kernel_offset, int64_t begin, int64_t end,
                 const Epilogue& ep) {
  (void)N;
  DWNET_DISPATCH_K(K, {
    auto rows = [&](auto row_fn) {
      for_each_row<kK>(x, kernels, out, H, W, C, G, kernel_offset, begin, end,
                       row_fn);
    };
    switch (vectors_per_tile(C / G)) {
      case 4: rows([&](const RowView& r, int64_t w, int64_t e) {
                interleaved_row<kK, 4>(r, w, e, ep); }); break;
      case 3: rows([&](const RowView& r, int64_t w, int64_t e) {
                interleaved_row<kK, 3>(r, w, e, ep); }); break;
      case 2: rows([&](const RowView& r, int64_t w, int64_t e) {
                interleaved_row<kK, 2>(r, w, e, ep); }); break;
      default: rows([&](const RowView& r, int64_t w, int64_t e) {
                 interleaved_row<kK, 1>(r, w, e, ep); });
    }
  });
}

}  // namespace

// kernels[p] = features[p] @ weight.T + weight_bias, laid out (k*k, G), then
// out[n, h, w, c] = relu?(bias[c] + scale[c] * sum_ij x[n, h + i - k//2,
// w + j - k//2, c] * kernels[p, i, j, c % G]) for every pixel p of the flat
// N * H * W ones (interleaved channels). Each thread generates the kernels
// of a chunk of pixels into its own buffer (a single-threaded GEMM, as it
// runs inside the parallel region) and applies them while they are in its
// cache. Inference only.
at::Tensor i_dynamic_conv_nhwc(const at::Tensor& x, const at::Tensor& features,
                               const at::Tensor& weight,
                               const c10::optional<at::Tensor>& weight_bias,
                               int64_t kernel_size,
                               const c10::optional<at::Tensor>& scale,
                               const c10::optional<at::Tensor>& bias,
                               bool relu, int64_t chunk_pixels) {
  TORCH_CHECK(dwnet_mm::cpu_supported(), "this CPU lacks AVX2/FMA");
  dwnet_mm::check_nhwc(x, "x");
  const int64_t N = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
  const int64_t K = kernel_size, K2 = K * K, pixels = N * H * W;
  TORCH_CHECK(features.dim() == 2 && features.size(0) == pixels &&
                  features.scalar_type() == at::kFloat,
              "features must be float32 (N*H*W, C_h), got ", features.sizes());
  TORCH_CHECK(weight.dim() == 2 && weight.size(1) == features.size(1) &&
                  weight.size(0) % K2 == 0 &&
                  weight.scalar_type() == at::kFloat,
              "weight must be float32 (k*k*G, C_h), got ", weight.sizes());
  const int64_t G = weight.size(0) / K2;
  dwnet_mm::check_groups(x, G);
  TORCH_CHECK(chunk_pixels > 0, "chunk_pixels must be positive");
  const bool has_weight_bias =
      dwnet_mm::optional_channels(weight_bias, K2 * G, "weight_bias");
  const Epilogue ep{dwnet_mm::optional_channels(scale, C, "scale"),
                    dwnet_mm::optional_channels(bias, C, "bias"), relu};
  const at::Tensor weight_t = weight.t();  // a view: the GEMM reads it so
  at::Tensor out = at::empty_like(x);
  const float* xp = x.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t chunks = (pixels + chunk_pixels - 1) / chunk_pixels;
  at::parallel_for(0, chunks, 1, [&](int64_t b, int64_t e) {
    at::Tensor buffer = at::empty({chunk_pixels, K2 * G}, x.options());
    for (int64_t chunk = b; chunk < e; ++chunk) {
      const int64_t start = chunk * chunk_pixels;
      const int64_t n = std::min(chunk_pixels, pixels - start);
      at::Tensor kernels = buffer.narrow(0, 0, n);
      if (has_weight_bias)
        at::addmm_out(kernels, *weight_bias, features.narrow(0, start, n),
                      weight_t);
      else
        at::mm_out(kernels, features.narrow(0, start, n), weight_t);
      apply_chunk(xp, kernels.data_ptr<float>(), op, N, H, W, C, G, K, start,
                  start, start + n, ep);
    }
  });
  return out;
}

void register_i_dynamic_conv(pybind11::module& m) {
  m.def("i_dynamic_conv_nhwc", &i_dynamic_conv_nhwc, py::arg("x"),
        py::arg("features"), py::arg("weight"), py::arg("weight_bias"),
        py::arg("kernel_size"), py::arg("scale") = py::none(),
        py::arg("bias") = py::none(), py::arg("relu") = false,
        py::arg("chunk_pixels"));
}
