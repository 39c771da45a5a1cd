"""ONNX export of DWNet models and its check in ONNX Runtime
(``pip install "dwnet-mm[export]"``)."""
from .onnx_export import (EXPORT_INSTALL, MissingExportDependency,
                          SlicedAdaptiveAvgPool2d, TensorOutputs,
                          export_onnx, flat_tensors, max_relative_error,
                          nonstandard_ops, onnxruntime_session,
                          replace_adaptive_pools, require_onnxruntime,
                          run_onnxruntime)

__all__ = [
    'EXPORT_INSTALL', 'MissingExportDependency', 'SlicedAdaptiveAvgPool2d',
    'TensorOutputs', 'export_onnx', 'flat_tensors', 'max_relative_error',
    'nonstandard_ops', 'onnxruntime_session', 'replace_adaptive_pools',
    'require_onnxruntime', 'run_onnxruntime'
]
