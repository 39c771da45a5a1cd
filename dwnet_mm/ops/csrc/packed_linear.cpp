// A linear layer on many rows, out = x @ weight^T + bias (ReLU and
// accumulation into out fused), for x86-64 CPUs: the 1x1 convs and MLPs,
// with the training form's gradients. On this project's AMD EPYC (Zen 4) machine, MKL's sgemm
// runs DWNet-T's shapes (inner sizes 96-768) at 60-90% of what these
// register-tiled loops reach, and a fused epilogue saves a pass over the
// output for the bias, the ReLU and the residual add.
//
// The weight is packed once (pack_linear_weight) into column panels of
// kPanel outputs, (N / kPanel, K, kPanel); a micro-kernel keeps a tile of
// rows x kPanel outputs in registers over a block of K, broadcasting x and
// loading one panel row per step. AVX-512 (Zen 4, Intel) uses 12 x 32 tiles,
// AVX2 6 x 16.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>

#include "common.h"

namespace {

using dwnet_mm::check_input;

constexpr int64_t kBlockK = 384;            // inner size per pass
constexpr int64_t kBlockRows = 192;         // rows of x kept in L2 per pass
constexpr int64_t kMinPanelWidth = 16;

bool has_avx512() { return __builtin_cpu_supports("avx512f"); }

// The panel width of the packed weight of N outputs on this CPU.
int64_t panel_width(int64_t N) {
  return has_avx512() && N % 32 == 0 ? 32 : kMinPanelWidth;
}

// A tile of kRows x 32 outputs: out = [out +] [bias +] x @ panel, over K.
template <int kRows>
__attribute__((target("avx512f,avx2,fma"))) void tile_avx512(
    const float* x, int64_t ldx, int64_t xk, const float* panel, int64_t ldp,
    int64_t K, float* out, int64_t ldo, const float* bias, bool load_out,
    bool relu) {
  __m512 acc[kRows][2];
  const __m512 b0 = bias ? _mm512_loadu_ps(bias) : _mm512_setzero_ps();
  const __m512 b1 = bias ? _mm512_loadu_ps(bias + 16) : _mm512_setzero_ps();
#pragma GCC unroll 12
  for (int r = 0; r < kRows; ++r) {
    acc[r][0] = b0;
    acc[r][1] = b1;
    if (load_out) {
      acc[r][0] = _mm512_add_ps(acc[r][0], _mm512_loadu_ps(out + r * ldo));
      acc[r][1] =
          _mm512_add_ps(acc[r][1], _mm512_loadu_ps(out + r * ldo + 16));
    }
  }
  for (int64_t k = 0; k < K; ++k) {
    const __m512 w0 = _mm512_loadu_ps(panel + k * ldp);
    const __m512 w1 = _mm512_loadu_ps(panel + k * ldp + 16);
#pragma GCC unroll 12
    for (int r = 0; r < kRows; ++r) {
      const __m512 v = _mm512_set1_ps(x[r * ldx + k * xk]);
      acc[r][0] = _mm512_fmadd_ps(v, w0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(v, w1, acc[r][1]);
    }
  }
#pragma GCC unroll 12
  for (int r = 0; r < kRows; ++r) {
    if (relu) {
      acc[r][0] = _mm512_max_ps(acc[r][0], _mm512_setzero_ps());
      acc[r][1] = _mm512_max_ps(acc[r][1], _mm512_setzero_ps());
    }
    _mm512_storeu_ps(out + r * ldo, acc[r][0]);
    _mm512_storeu_ps(out + r * ldo + 16, acc[r][1]);
  }
}

// The same with kRows x 16 outputs in AVX2 registers.
template <int kRows>
__attribute__((target("avx2,fma"))) void tile_avx2(
    const float* x, int64_t ldx, int64_t xk, const float* panel, int64_t ldp,
    int64_t K, float* out, int64_t ldo, const float* bias, bool load_out,
    bool relu) {
  __m256 acc[kRows][2];
  const __m256 b0 = bias ? _mm256_loadu_ps(bias) : _mm256_setzero_ps();
  const __m256 b1 = bias ? _mm256_loadu_ps(bias + 8) : _mm256_setzero_ps();
#pragma GCC unroll 6
  for (int r = 0; r < kRows; ++r) {
    acc[r][0] = b0;
    acc[r][1] = b1;
    if (load_out) {
      acc[r][0] = _mm256_add_ps(acc[r][0], _mm256_loadu_ps(out + r * ldo));
      acc[r][1] = _mm256_add_ps(acc[r][1], _mm256_loadu_ps(out + r * ldo + 8));
    }
  }
  for (int64_t k = 0; k < K; ++k) {
    const __m256 w0 = _mm256_loadu_ps(panel + k * ldp);
    const __m256 w1 = _mm256_loadu_ps(panel + k * ldp + 8);
#pragma GCC unroll 6
    for (int r = 0; r < kRows; ++r) {
      const __m256 v = _mm256_broadcast_ss(x + r * ldx + k * xk);
      acc[r][0] = _mm256_fmadd_ps(v, w0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(v, w1, acc[r][1]);
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < kRows; ++r) {
    if (relu) {
      acc[r][0] = _mm256_max_ps(acc[r][0], _mm256_setzero_ps());
      acc[r][1] = _mm256_max_ps(acc[r][1], _mm256_setzero_ps());
    }
    _mm256_storeu_ps(out + r * ldo, acc[r][0]);
    _mm256_storeu_ps(out + r * ldo + 8, acc[r][1]);
  }
}

using TileFn = void (*)(const float*, int64_t, int64_t, const float*,
                        int64_t, int64_t, float*, int64_t, const float*, bool,
                        bool);

// Indexed by the number of rows of the tile, 1..12 and 1..6.
constexpr TileFn kAvx512Tiles[] = {
    nullptr,           tile_avx512<1>,  tile_avx512<2>,  tile_avx512<3>,
    tile_avx512<4>,    tile_avx512<5>,  tile_avx512<6>,  tile_avx512<7>,
    tile_avx512<8>,    tile_avx512<9>,  tile_avx512<10>, tile_avx512<11>,
    tile_avx512<12>};
constexpr TileFn kAvx2Tiles[] = {nullptr,      tile_avx2<1>, tile_avx2<2>,
                                 tile_avx2<3>, tile_avx2<4>, tile_avx2<5>,
                                 tile_avx2<6>};

at::Tensor pack_linear_weight(const at::Tensor& weight) {
  check_input(weight, "weight");
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) % kMinPanelWidth == 0,
              "weight must be (out_features, in_features) with out_features "
              "a multiple of 16, got ", weight.sizes(),
              "; use F.linear for other widths");
  const int64_t N = weight.size(0), K = weight.size(1);
  const int64_t width = panel_width(N);
  auto packed = at::empty({N / width, K, width}, weight.options());
  const float* w = weight.data_ptr<float>();
  float* p = packed.data_ptr<float>();
  at::parallel_for(0, N / width, 1, [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j)
      for (int64_t k = 0; k < K; ++k)
        for (int64_t c = 0; c < width; ++c)
          p[(j * K + k) * width + c] = w[(j * width + c) * K + k];
  });
  return packed;
}

// out (M, N) = [out +] x (M, K) @ B (K, N) [+ bias], then [ReLU], where B
// is given as column panels (pack_linear_weight: column j at
// b[(j / w * K + k) * w + j % w]) or as a plain row-major matrix.
void gemm(const at::Tensor& x, const float* b, bool packed, int64_t K,
          int64_t N, int64_t width, const c10::optional<at::Tensor>& bias,
          at::Tensor& out, bool relu, bool accumulate) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat &&
                  x.dim() == 2 && (x.stride(1) == 1 || x.stride(0) == 1),
              "x must be a 2-D float32 CPU tensor, row- or column-major "
              "(a transposed view), got sizes ", x.sizes(), " and strides ",
              x.strides());
  check_input(out, "out");
  const int64_t M = x.size(0);
  const int64_t ldx = x.stride(0), xk = x.stride(1);
  TORCH_CHECK(x.dim() == 2 && x.size(1) == K, "x must be (M, ", K,
              "), got ", x.sizes());
  TORCH_CHECK(out.dim() == 2 && out.size(0) == M && out.size(1) == N,
              "out must be (", M, ", ", N, "), got ", out.sizes());
  const float* bias_data = dwnet_mm::optional_channels(bias, N, "bias");
  const bool wide = width == 32;
  const int64_t tile_rows = wide ? 12 : 6;
  const TileFn* tiles = wide ? kAvx512Tiles : kAvx2Tiles;
  const float* xp = x.data_ptr<float>();
  float* op = out.data_ptr<float>();
  // Each thread takes an equal share of the row tiles, in blocks of
  // kBlockRows rows (x's block stays in L2 while the panels pass over it).
  const int64_t tile_count = (M + tile_rows - 1) / tile_rows;
  const int64_t block_tiles = kBlockRows / tile_rows;
  at::parallel_for(0, tile_count, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t tb = t0; tb < t1; tb += block_tiles) {
      const int64_t m0 = tb * tile_rows;
      const int64_t m1 = std::min(M, std::min(t1, tb + block_tiles) *
                                         tile_rows);
      for (int64_t k0 = 0; k0 < K; k0 += kBlockK) {
        const int64_t kc = std::min(kBlockK, K - k0);
        const bool first = k0 == 0, last = k0 + kc == K;
        for (int64_t j = 0; j < N; j += width) {
          const float* panel = packed ? b + (j * K + k0 * width)
                                      : b + (k0 * N + j);
          const int64_t ldp = packed ? width : N;
          for (int64_t m = m0; m < m1; m += tile_rows) {
            const int64_t rows = std::min(tile_rows, m1 - m);
            tiles[rows](xp + m * ldx + k0 * xk, ldx, xk, panel, ldp, kc,
                        op + m * N + j, N,
                        first && bias_data ? bias_data + j : nullptr,
                        !first || accumulate, last && relu);
          }
        }
      }
    }
  });
}

// x @ weight^T with the weight packed by pack_linear_weight.
void packed_linear(const at::Tensor& x, const at::Tensor& packed,
                   const c10::optional<at::Tensor>& bias, at::Tensor& out,
                   bool relu, bool accumulate) {
  check_input(packed, "packed");
  TORCH_CHECK(packed.dim() == 3 && (packed.size(2) == 16 ||
                                    packed.size(2) == 32),
              "packed must come from pack_linear_weight, got shape ",
              packed.sizes());
  const int64_t width = packed.size(2), N = packed.size(0) * width;
  TORCH_CHECK(width == panel_width(N),
              "packed was made for another CPU; pack the weight again");
  gemm(x, packed.data_ptr<float>(), true, packed.size(1), N, width, bias,
       out, relu, accumulate);
}

// [out +] x @ b for a plain row-major b (K, N): the backward's products,
// which read the weight and activations as they are.
void matmul_into(const at::Tensor& x, const at::Tensor& b, at::Tensor& out,
                 bool accumulate) {
  check_input(b, "b");
  TORCH_CHECK(b.dim() == 2 && b.size(1) % kMinPanelWidth == 0,
              "b must be (K, N) with N a multiple of 16, got ", b.sizes(),
              "; use torch.mm for other widths");
  gemm(x, b.data_ptr<float>(), false, b.size(0), b.size(1),
       panel_width(b.size(1)), c10::nullopt, out, false, accumulate);
}

}  // namespace

void register_packed_linear(pybind11::module& m) {
  m.def("pack_linear_weight", &pack_linear_weight, py::arg("weight"),
        "(N, K) weight -> (N / w, K, w) column panels for packed_linear");
  m.def("packed_linear", &packed_linear, py::arg("x"), py::arg("packed"),
        py::arg("bias"), py::arg("out"), py::arg("relu") = false,
        py::arg("accumulate") = false,
        "out (M, N) = [out +] x @ weight^T [+ bias], then [ReLU]");
  m.def("matmul_into", &matmul_into, py::arg("x"), py::arg("b"),
        py::arg("out"), py::arg("accumulate") = false,
        "out (M, N) = [out +] x @ b, b (K, N) row-major");
}
