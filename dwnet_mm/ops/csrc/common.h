// Shared by the CPU kernels: the processor check, tensor checks and the
// compiled kernel sizes.
#pragma once

#include <torch/extension.h>

namespace dwnet_mm {

constexpr int64_t kLanes = 8;  // floats per AVX register

inline bool cpu_supported() {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

inline void check_input(const at::Tensor& x, const char* name) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat &&
                  x.is_contiguous(),
              name, " must be a contiguous float32 CPU tensor");
}

inline void check_nhwc(const at::Tensor& x, const char* name) {
  check_input(x, name);
  TORCH_CHECK(x.dim() == 4 && x.size(3) % kLanes == 0, name,
              " must be (N, H, W, C) with C a multiple of 8, got ",
              x.sizes());
}

// A (C, ) float tensor's data, or nullptr for None.
inline const float* optional_channels(const c10::optional<at::Tensor>& t,
                                      int64_t C, const char* name) {
  if (!t.has_value() || !t->defined()) return nullptr;
  check_input(*t, name);
  TORCH_CHECK(t->numel() == C, name, " must have ", C, " elements");
  return t->data_ptr<float>();
}

// The interleaved channel order of the I-Dynamic kernels needs G to be a
// multiple of 8 that divides C.
inline void check_groups(const at::Tensor& x, int64_t G) {
  TORCH_CHECK(G % kLanes == 0 && x.size(3) % G == 0,
              "the interleaved kernels need groups a multiple of 8 that "
              "divides C, got ", G, " groups of ", x.size(3), " channels");
}

}  // namespace dwnet_mm

// Runs __VA_ARGS__ with the kernel size K as the constant kK.
#define DWNET_DISPATCH_K(K, ...)                                          \
  switch (K) {                                                            \
    case 3: { constexpr int kK = 3; __VA_ARGS__; break; }                 \
    case 5: { constexpr int kK = 5; __VA_ARGS__; break; }                 \
    case 7: { constexpr int kK = 7; __VA_ARGS__; break; }                 \
    case 9: { constexpr int kK = 9; __VA_ARGS__; break; }                 \
    default: TORCH_CHECK(false, "kernel size ", K,                        \
                         " is not one of the compiled sizes 3, 5, 7, 9"); \
  }
