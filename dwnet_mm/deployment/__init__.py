"""Deployment: ONNX export of DWNet models and its check in ONNX Runtime
(``pip install "dwnet-mm[deploy]"``)."""
from .model_building import build_model, load_weights
from .onnx_export import (DEPLOY_INSTALL, MissingDeployDependency,
                          SlicedAdaptiveAvgPool2d, TensorOutputs,
                          export_onnx, flat_tensors, max_relative_error,
                          nonstandard_ops, onnxruntime_session,
                          replace_adaptive_pools, require_onnxruntime,
                          run_onnxruntime)

__all__ = [
    'build_model', 'load_weights',
    'DEPLOY_INSTALL', 'MissingDeployDependency', 'SlicedAdaptiveAvgPool2d',
    'TensorOutputs', 'export_onnx', 'flat_tensors', 'max_relative_error',
    'nonstandard_ops', 'onnxruntime_session', 'replace_adaptive_pools',
    'require_onnxruntime', 'run_onnxruntime'
]
