// The Python module of the CPU kernels.
#include <torch/extension.h>

#include "common.h"

at::Tensor depthwise_conv_nhwc(const at::Tensor& x, const at::Tensor& weight,
                               const c10::optional<at::Tensor>& bias,
                               bool relu);
at::Tensor depthwise_conv_nhwc_weight_grad(const at::Tensor& x,
                                           const at::Tensor& grad, int64_t K,
                                           bool per_image);
at::Tensor i_dynamic_conv_nhwc(const at::Tensor& x, const at::Tensor& features,
                               const at::Tensor& weight_t,
                               const c10::optional<at::Tensor>& weight_bias,
                               int64_t kernel_size,
                               const c10::optional<at::Tensor>& scale,
                               const c10::optional<at::Tensor>& bias,
                               bool relu, int64_t chunk_pixels);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("cpu_supported", &dwnet_mm::cpu_supported,
        "Whether this CPU has the AVX2 and FMA instructions the kernels use");
  m.def("depthwise_conv_nhwc", &depthwise_conv_nhwc, py::arg("x"),
        py::arg("weight"), py::arg("bias") = py::none(),
        py::arg("relu") = false);
  m.def("depthwise_conv_nhwc_weight_grad", &depthwise_conv_nhwc_weight_grad,
        py::arg("x"), py::arg("grad"), py::arg("kernel_size"),
        py::arg("per_image"));
  m.def("i_dynamic_conv_nhwc", &i_dynamic_conv_nhwc, py::arg("x"),
        py::arg("features"), py::arg("weight_t"), py::arg("weight_bias"),
        py::arg("kernel_size"),
        py::arg("scale") = py::none(), py::arg("bias") = py::none(),
        py::arg("relu") = false, py::arg("chunk_pixels") = 128);
}
