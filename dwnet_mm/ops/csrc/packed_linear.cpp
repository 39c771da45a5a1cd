// A linear layer on many rows, out = x @ weight^T + bias (ReLU and
// accumulation into out fused), for x86-64 CPUs: the 1x1 convs and MLPs,
// with the training form's gradients, and the whole MLP in one call for
// inference (fused_mlp). On this project's AMD EPYC (Zen 4) machine, MKL's
// sgemm runs DWNet-T's shapes (inner sizes 96-768) at 60-90% of what these
// register-tiled loops reach, and a fused epilogue saves a pass over the
// output for the bias, the ReLU and the residual add.
//
// The weight is packed once (pack_linear_weight) into column panels of
// kPanel outputs, (N / kPanel, K, kPanel); a micro-kernel keeps a tile of
// rows x kPanel outputs in registers over a block of K, broadcasting x and
// loading one panel row per step. AVX-512 (Zen 4, Intel) uses 12 x 32 tiles,
// AVX2 6 x 16.
#include <torch/extension.h>
#include <ATen/MemoryOverlap.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <vector>

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

// B (K, N) as the kernels read it: column panels of `width` outputs
// (pack_linear_weight: column j at b[(j / width * K + k) * width + j % width])
// or a plain row-major matrix.
struct Operand {
  const float* b;
  bool packed;
  int64_t K, N, width;
};

// Rows per micro-kernel tile for B's panel width: 12 x 32 (AVX-512) or
// 6 x 16 (AVX2).
int64_t tile_rows_for(const Operand& B) { return B.width == 32 ? 12 : 6; }

// Rows [0, rows) of x (from column k0, kc columns) copied tile by tile,
// each tile k-major: buf[t * kc + k * tile_rows + r] for row t + r. The
// micro-kernel then reads a tile's rows side by side instead of from rows
// ldx apart, which map to the same L1 sets when ldx * 4 is a multiple of
// the cache's way size (K = 3072 or 2048: every row of a tile in one set).
void pack_rows(const float* x, int64_t ldx, int64_t xk, int64_t rows,
               int64_t kc, int64_t tile_rows, float* buf) {
  for (int64_t t = 0; t < rows; t += tile_rows) {
    const int64_t n = std::min(tile_rows, rows - t);
    float* dst = buf + t * kc;
    for (int64_t k = 0; k < kc; ++k)
      for (int64_t r = 0; r < n; ++r)
        dst[k * tile_rows + r] = x[(t + r) * ldx + k * xk];
  }
}

// Rows [m0, m1) of out = [out +] x @ B [+ bias], then [ReLU], on the
// calling thread: x's rows stay in L2 while the panels pass over them.
// With `buffer` (kBlockK floats per row of m1 - m0 rounded up to whole
// tiles), x's rows are packed there first (pack_rows).
void gemm_rows(const float* x, int64_t ldx, int64_t xk, const Operand& B,
               const float* bias, float* out, int64_t ldo, int64_t m0,
               int64_t m1, bool relu, bool accumulate, float* buffer) {
  const int64_t tile_rows = tile_rows_for(B);
  const TileFn* tiles = B.width == 32 ? kAvx512Tiles : kAvx2Tiles;
  for (int64_t k0 = 0; k0 < B.K; k0 += kBlockK) {
    const int64_t kc = std::min(kBlockK, B.K - k0);
    const bool first = k0 == 0, last = k0 + kc == B.K;
    if (buffer)
      pack_rows(x + m0 * ldx + k0 * xk, ldx, xk, m1 - m0, kc, tile_rows,
                buffer);
    for (int64_t j = 0; j < B.N; j += B.width) {
      const float* panel = B.packed ? B.b + (j * B.K + k0 * B.width)
                                    : B.b + (k0 * B.N + j);
      const int64_t ldp = B.packed ? B.width : B.N;
      for (int64_t m = m0; m < m1; m += tile_rows) {
        const int64_t rows = std::min(tile_rows, m1 - m);
        const float* xt = buffer ? buffer + (m - m0) * kc
                                 : x + m * ldx + k0 * xk;
        tiles[rows](xt, buffer ? 1 : ldx, buffer ? tile_rows : xk, panel,
                    ldp, kc, out + m * ldo + j, ldo,
                    first && bias ? bias + j : nullptr,
                    !first || accumulate, last && relu);
      }
    }
  }
}

// Whether gemm_rows should pack x's rows: where the rows of a tile (or,
// for a transposed x, its columns) lie a multiple of 4 KiB apart. Elsewhere
// the copy cost more than it saved (5-10% on DWNet-T's inner sizes 96-768).
bool should_pack(int64_t ldx, int64_t xk) {
  return (xk == 1 ? ldx : xk) % 1024 == 0;
}

// Rows rounded up to whole tiles of the widest micro-kernel (12 rows).
int64_t round_to_tiles(int64_t rows) { return (rows + 11) / 12 * 12; }

// One scratch buffer of `size` floats per thread of at::parallel_for, as a
// torch tensor, so that the profiler's memory figures include it.
class ThreadBuffers {
 public:
  explicit ThreadBuffers(int64_t size)
      : size_(size),
        data_(at::empty({size ? at::get_num_threads() : 0, size},
                        at::TensorOptions().dtype(at::kFloat))) {}
  // This thread's buffer, or nullptr for size 0.
  float* get() const {
    if (!size_) return nullptr;
    const int64_t slot = at::get_thread_num();
    TORCH_CHECK(slot < data_.size(0), "thread ", slot, " of ",
                data_.size(0));
    return data_.data_ptr<float>() + slot * size_;
  }

 private:
  int64_t size_;
  at::Tensor data_;
};

// out (M, N) = [out +] x (M, K) @ B (K, N) [+ bias], then [ReLU].
void gemm(const at::Tensor& x, const Operand& B,
          const c10::optional<at::Tensor>& bias, at::Tensor& out, bool relu,
          bool accumulate) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat &&
                  x.dim() == 2 && (x.stride(1) == 1 || x.stride(0) == 1),
              "x must be a 2-D float32 CPU tensor, row- or column-major "
              "(a transposed view), got sizes ", x.sizes(), " and strides ",
              x.strides());
  check_input(out, "out");
  const int64_t M = x.size(0);
  const int64_t ldx = x.stride(0), xk = x.stride(1);
  TORCH_CHECK(x.size(1) == B.K, "x must be (M, ", B.K, "), got ", x.sizes());
  TORCH_CHECK(out.dim() == 2 && out.size(0) == M && out.size(1) == B.N,
              "out must be (", M, ", ", B.N, "), got ", out.sizes());
  const float* bias_data = dwnet_mm::optional_channels(bias, B.N, "bias");
  const int64_t tile_rows = tile_rows_for(B);
  const float* xp = x.data_ptr<float>();
  float* op = out.data_ptr<float>();
  // Each thread takes an equal share of the row tiles, in blocks of
  // kBlockRows rows.
  const int64_t tile_count = (M + tile_rows - 1) / tile_rows;
  const int64_t block_tiles = kBlockRows / tile_rows;
  const int64_t buffer_size = block_tiles * tile_rows * kBlockK;
  ThreadBuffers buffers(should_pack(ldx, xk) ? buffer_size : 0);
  at::parallel_for(0, tile_count, 1, [&](int64_t t0, int64_t t1) {
    float* buffer = buffers.get();
    for (int64_t tb = t0; tb < t1; tb += block_tiles) {
      const int64_t m1 = std::min(M, std::min(t1, tb + block_tiles) *
                                         tile_rows);
      gemm_rows(xp, ldx, xk, B, bias_data, op, B.N, tb * tile_rows, m1, relu,
                accumulate, buffer);
    }
  });
}

void check_packed(const at::Tensor& packed, const char* name) {
  check_input(packed, name);
  TORCH_CHECK(packed.dim() == 3 && (packed.size(2) == 16 ||
                                    packed.size(2) == 32),
              name, " must come from pack_linear_weight, got shape ",
              packed.sizes());
  TORCH_CHECK(packed.size(2) == panel_width(packed.size(0) * packed.size(2)),
              name, " was made for another CPU; pack the weight again");
}

Operand packed_operand(const at::Tensor& packed) {
  return {packed.data_ptr<float>(), true, packed.size(1),
          packed.size(0) * packed.size(2), packed.size(2)};
}

// x @ weight^T with the weight packed by pack_linear_weight.
void packed_linear(const at::Tensor& x, const at::Tensor& packed,
                   const c10::optional<at::Tensor>& bias, at::Tensor& out,
                   bool relu, bool accumulate) {
  check_packed(packed, "packed");
  gemm(x, packed_operand(packed), bias, out, relu, accumulate);
}

// [out +] x @ b for a plain row-major b (K, N): the backward's products,
// which read the weight and activations as they are.
void matmul_into(const at::Tensor& x, const at::Tensor& b, at::Tensor& out,
                 bool accumulate) {
  check_input(b, "b");
  TORCH_CHECK(b.dim() == 2 && b.size(1) % kMinPanelWidth == 0,
              "b must be (K, N) with N a multiple of 16, got ", b.sizes(),
              "; use torch.mm for other widths");
  gemm(x, {b.data_ptr<float>(), false, b.size(0), b.size(1),
           panel_width(b.size(1))},
       c10::nullopt, out, false, accumulate);
}

// out = [out +] fc2(GELU(fc1(x))), fc1 and fc2 packed with their biases, in
// blocks of `block_rows` rows per task: a block's hidden activations stay
// in the thread's L2 cache from fc1 through the GELU to fc2, where the
// chunked MLP writes and reads them through the shared cache or memory.
// out may be x (the residual update in place): a block's fc1 has read its
// rows before its fc2 writes them.
void fused_mlp(const at::Tensor& x, const at::Tensor& packed1,
               const c10::optional<at::Tensor>& bias1,
               const at::Tensor& packed2,
               const c10::optional<at::Tensor>& bias2, at::Tensor& out,
               bool accumulate, int64_t block_rows) {
  check_input(x, "x");
  check_input(out, "out");
  check_packed(packed1, "packed1");
  check_packed(packed2, "packed2");
  const Operand fc1 = packed_operand(packed1), fc2 = packed_operand(packed2);
  TORCH_CHECK(x.dim() == 2 && x.size(1) == fc1.K, "x must be (M, ", fc1.K,
              "), got ", x.sizes());
  TORCH_CHECK(fc2.K == fc1.N, "fc2 takes ", fc2.K,
              " inputs but fc1 gives ", fc1.N);
  const int64_t M = x.size(0), H = fc1.N;
  TORCH_CHECK(out.dim() == 2 && out.size(0) == M && out.size(1) == fc2.N,
              "out must be (", M, ", ", fc2.N, "), got ", out.sizes());
  TORCH_CHECK(block_rows > 0, "block_rows must be positive");
  const auto overlap = at::get_overlap_status(out, x);
  TORCH_CHECK(overlap == at::MemOverlapStatus::Full ||
                  overlap == at::MemOverlapStatus::No,
              "out must be x itself or not overlap it");
  const float* b1 = dwnet_mm::optional_channels(bias1, H, "bias1");
  const float* b2 = dwnet_mm::optional_channels(bias2, fc2.N, "bias2");
  const float* xp = x.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t ldx = x.size(1), ldo = out.size(1);
  const int64_t blocks = (M + block_rows - 1) / block_rows;
  const bool pack1 = should_pack(ldx, 1), pack2 = should_pack(H, 1);
  ThreadBuffers hiddens(block_rows * H);
  ThreadBuffers buffers(pack1 || pack2 ? round_to_tiles(block_rows) * kBlockK
                                       : 0);
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1_end) {
    float* hidden = hiddens.get();
    float* buffer = buffers.get();
    for (int64_t blk = b0; blk < b1_end; ++blk) {
      const int64_t m0 = blk * block_rows;
      const int64_t rows = std::min(block_rows, M - m0);
      gemm_rows(xp + m0 * ldx, ldx, 1, fc1, nullptr, hidden, H, 0, rows,
                false, false, pack1 ? buffer : nullptr);
      dwnet_mm::bias_gelu_rows(hidden, b1, H, rows);
      gemm_rows(hidden, H, 1, fc2, b2, op + m0 * ldo, ldo, 0, rows, false,
                accumulate, pack2 ? buffer : nullptr);
    }
  });
}

// sums[c] += the sum over rows of x[r, c], x (rows, width) row-major.
void add_row_sums(const float* x, int64_t rows, int64_t width, float* sums) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < width; ++c) sums[c] += x[r * width + c];
}

// The gradients of fused_mlp's out = fc2(GELU(fc1(x))) (no accumulation)
// for grad_out g, in blocks of block_rows rows per task, each computing
// fc1 of its rows again instead of reading a saved (rows, hidden) tensor:
// h = fc1(x), a = GELU(h); dW2 += g^T a; dh = (g W2) * GELU'(h);
// dx = dh W1; dW1 += dh^T x; the bias gradients are the row sums of g and
// dh. All of it stays in the thread's L2 cache; each thread sums its own
// weight gradients, added up at the end. Returns grad_x, grad_w1,
// grad_b1, grad_w2, grad_b2, undefined where not asked for.
std::vector<at::Tensor> fused_mlp_backward(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& w1,
    const at::Tensor& packed1, const c10::optional<at::Tensor>& bias1,
    const at::Tensor& w2, int64_t block_rows, bool need_x, bool need_w1,
    bool need_b1, bool need_w2, bool need_b2) {
  check_input(grad_out, "grad_out");
  check_input(x, "x");
  check_input(w1, "w1");
  check_input(w2, "w2");
  check_packed(packed1, "packed1");
  const Operand fc1 = packed_operand(packed1);
  const int64_t M = x.size(0), C = x.size(1), H = w1.size(0),
                C2 = w2.size(0);
  TORCH_CHECK(x.dim() == 2 && w1.dim() == 2 && w1.size(1) == C &&
                  fc1.K == C && fc1.N == H,
              "w1 and packed1 must be (", H, ", ", C, ") for x of ",
              x.sizes());
  TORCH_CHECK(w2.dim() == 2 && w2.size(1) == H && C2 % kMinPanelWidth == 0 &&
                  H % kMinPanelWidth == 0 && C % kMinPanelWidth == 0,
              "w2 must be (C_out, ", H, ") and every width a multiple of ",
              kMinPanelWidth, ", got w1 ", w1.sizes(), " and w2 ",
              w2.sizes());
  TORCH_CHECK(grad_out.dim() == 2 && grad_out.size(0) == M &&
                  grad_out.size(1) == C2,
              "grad_out must be (", M, ", ", C2, "), got ", grad_out.sizes());
  TORCH_CHECK(block_rows > 0, "block_rows must be positive");
  const float* b1 = dwnet_mm::optional_channels(bias1, H, "bias1");
  const bool need_hidden_grad = need_x || need_w1 || need_b1;
  const int64_t threads = at::get_num_threads();
  auto options = x.options();
  at::Tensor grad_x = need_x ? at::empty({M, C}, options) : at::Tensor();
  // Per-thread sums, zeroed; a thread that gets no rows adds zeros.
  auto sums = [&](bool need, at::IntArrayRef shape) {
    return need ? at::zeros(shape, options) : at::Tensor();
  };
  at::Tensor gw1 = sums(need_w1, {threads, H, C});
  at::Tensor gw2 = sums(need_w2, {threads, C2, H});
  at::Tensor gb1 = sums(need_b1, {threads, H});
  at::Tensor gb2 = sums(need_b2, {threads, C2});
  const Operand w2_plain{w2.data_ptr<float>(), false, C2, H, panel_width(H)};
  const Operand w1_plain{w1.data_ptr<float>(), false, H, C, panel_width(C)};
  const float* xp = x.data_ptr<float>();
  const float* gp = grad_out.data_ptr<float>();
  const int64_t blocks = (M + block_rows - 1) / block_rows;
  ThreadBuffers hiddens(block_rows * H), acts(block_rows * H);
  // Whether the products read rows C, C2 or H floats apart (plain or
  // transposed) through the packing buffer, which takes the most rows of
  // any of them: x's block, g^T (C2 rows), dh^T (H rows).
  const bool pack_c = should_pack(C, 1), pack_c2 = should_pack(C2, 1),
             pack_h = should_pack(H, 1);
  ThreadBuffers buffers(pack_c || pack_c2 || pack_h
                            ? round_to_tiles(std::max({block_rows, H, C2})) *
                                  kBlockK
                            : 0);
  at::parallel_for(0, blocks, 1, [&](int64_t blk0, int64_t blk1) {
    const int64_t slot = at::get_thread_num();
    float* h = hiddens.get();
    float* a = acts.get();
    float* buffer = buffers.get();
    for (int64_t blk = blk0; blk < blk1; ++blk) {
      const int64_t m0 = blk * block_rows;
      const int64_t rows = std::min(block_rows, M - m0);
      const float* xb = xp + m0 * C;
      const float* gb = gp + m0 * C2;
      gemm_rows(xb, C, 1, fc1, b1, h, H, 0, rows, false, false,
                pack_c ? buffer : nullptr);
      dwnet_mm::gelu_and_slope(h, a, rows * H);
      if (need_w2) {
        // g^T (C2 x rows) @ a (rows x H): g read as a transposed matrix.
        gemm_rows(gb, 1, C2, {a, false, rows, H, panel_width(H)}, nullptr,
                  gw2.data_ptr<float>() + slot * C2 * H, H, 0, C2, false,
                  true, pack_c2 ? buffer : nullptr);
      }
      if (need_b2)
        add_row_sums(gb, rows, C2, gb2.data_ptr<float>() + slot * C2);
      if (!need_hidden_grad) continue;
      gemm_rows(gb, C2, 1, w2_plain, nullptr, a, H, 0, rows, false, false,
                pack_c2 ? buffer : nullptr);
      for (int64_t i = 0; i < rows * H; ++i) h[i] *= a[i];  // dh
      if (need_b1)
        add_row_sums(h, rows, H, gb1.data_ptr<float>() + slot * H);
      if (need_x) {
        gemm_rows(h, H, 1, w1_plain, nullptr,
                  grad_x.data_ptr<float>() + m0 * C, C, 0, rows, false,
                  false, pack_h ? buffer : nullptr);
      }
      if (need_w1) {
        gemm_rows(h, 1, H, {xb, false, rows, C, panel_width(C)}, nullptr,
                  gw1.data_ptr<float>() + slot * H * C, C, 0, H, false, true,
                  pack_h ? buffer : nullptr);
      }
    }
  });
  auto total = [](const at::Tensor& t) {
    return t.defined() ? t.sum(0) : at::Tensor();
  };
  return {grad_x, total(gw1), total(gb1), total(gw2), total(gb2)};
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
  m.def("fused_mlp", &fused_mlp, py::arg("x"), py::arg("packed1"),
        py::arg("bias1"), py::arg("packed2"), py::arg("bias2"),
        py::arg("out"), py::arg("accumulate"), py::arg("block_rows"),
        "out = [out +] fc2(GELU(fc1(x))) in blocks of block_rows rows; "
        "out may be x");
  m.def("fused_mlp_backward", &fused_mlp_backward, py::arg("grad_out"),
        py::arg("x"), py::arg("w1"), py::arg("packed1"), py::arg("bias1"),
        py::arg("w2"), py::arg("block_rows"), py::arg("need_x"),
        py::arg("need_w1"), py::arg("need_b1"), py::arg("need_w2"),
        py::arg("need_b2"),
        "grad_x, grad_w1, grad_b1, grad_w2, grad_b2 of fused_mlp, fc1 "
        "computed again per block of rows");
}
