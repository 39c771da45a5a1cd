// The Python module of the CPU kernels: each source registers its own.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <mutex>
#include <set>

#include "common.h"

void register_activation(pybind11::module& m);
void register_depthwise_conv(pybind11::module& m);
void register_i_dynamic_conv(pybind11::module& m);
void register_packed_linear(pybind11::module& m);
void register_small_batch_linear(pybind11::module& m);

namespace {

// How many threads the kernels' at::parallel_for uses for `tasks` tasks: 1
// where this module was compiled without torch's OpenMP.
int64_t parallel_threads(int64_t tasks) {
  std::mutex mutex;
  std::set<int> ids;
  at::parallel_for(0, tasks, 1, [&](int64_t, int64_t) {
    std::lock_guard<std::mutex> lock(mutex);
    ids.insert(at::get_thread_num());
  });
  return static_cast<int64_t>(ids.size());
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("cpu_supported", &dwnet_mm::cpu_supported,
        "Whether this CPU has the AVX2 and FMA instructions the kernels use");
  m.def("parallel_threads", &parallel_threads, py::arg("tasks"),
        "Threads the kernels' parallel loops use for this many tasks");
  register_activation(m);
  register_depthwise_conv(m);
  register_i_dynamic_conv(m);
  register_packed_linear(m);
  register_small_batch_linear(m);
}
