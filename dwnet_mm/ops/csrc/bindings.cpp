// The Python module of the CPU kernels (dwnet_mm._ext): each source
// registers its own functions.
#include <torch/extension.h>

#include "common.h"

void register_depthwise_conv(pybind11::module& m);
void register_i_dynamic_conv(pybind11::module& m);
void register_i_dynamic_backward(pybind11::module& m);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("cpu_supported", &dwnet_mm::cpu_supported,
        "Whether this CPU has the AVX2 and FMA instructions the kernels use");
  register_depthwise_conv(m);
  register_i_dynamic_conv(m);
  register_i_dynamic_backward(m);
}
