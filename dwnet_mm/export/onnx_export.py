"""Export DWNet models to ONNX and check the files in ONNX Runtime.

The export uses torch's TorchScript-based exporter
(``torch.onnx.export(..., dynamo=False)``): it writes opsets 11 to 17 (the
dynamo exporter, torch's default since 2.9, starts at opset 18 and needs
``onnxscript``). While it runs, :func:`dwnet_mm.ops.onnx_exporting` is true
and every DWNet layer takes a form made of standard ONNX ops, with sizes
that follow the input (see :mod:`dwnet_mm.ops.export`), so one file takes
any batch size and image size.
"""
import warnings

import numpy as np
import torch
import torch.nn as nn

#: What to install for the export and the check.
EXPORT_INSTALL = 'pip install "dwnet-mm[export]"'
#: ONNX domains of the standard operator set.
STANDARD_DOMAINS = ('', 'ai.onnx')


class MissingExportDependency(ImportError):
    """``onnx`` or ``onnxruntime`` is not installed."""


def require_onnxruntime():
    """Import ``onnx`` and ``onnxruntime`` or fail naming the extra.

    Returns:
        tuple: The ``onnx`` and ``onnxruntime`` modules.

    Raises:
        MissingExportDependency: With the install command.
    """
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise MissingExportDependency(
            f'the ONNX export and check need onnx and onnxruntime ({e}); '
            f'install them with: {EXPORT_INSTALL}') from e
    return onnx, onnxruntime


class SlicedAdaptiveAvgPool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d`` from slices and means.

    ONNX exports adaptive pooling only to a 1x1 output or for sizes that
    divide the input; the bins of PyTorch's adaptive pooling (rows
    ``floor(i * H / n)`` to ``ceil((i + 1) * H / n)``) are computed here
    from the input size at run time instead, rows then columns (the mean of
    a rectangle is the mean of its row means).

    Args:
        output_size (int | tuple[int, int]): Output (h, w).
    """

    def __init__(self, output_size):
        super().__init__()
        self.output_size = nn.modules.utils._pair(output_size)

    def forward(self, x):
        x = _adaptive_mean(x, 2, self.output_size[0])
        return _adaptive_mean(x, 3, self.output_size[1])


def _adaptive_mean(x, dim, bins):
    """Adaptive average pooling of ``x`` to ``bins`` along ``dim``."""
    size = x.shape[dim]
    means = []
    for i in range(bins):
        start = i * size // bins
        end = ((i + 1) * size + bins - 1) // bins  # ceil, never negative
        means.append(x.narrow(dim, start, end - start).mean(dim, True))
    return torch.cat(means, dim)


def replace_adaptive_pools(model):
    """Swap every ``nn.AdaptiveAvgPool2d`` of ``model`` with an output
    larger than 1x1 (e.g. mmseg's PPM) for
    :class:`SlicedAdaptiveAvgPool2d`, in place; same results.

    Returns:
        int: How many were replaced.
    """
    found = [(name, module) for name, module in model.named_modules()
             if isinstance(module, nn.AdaptiveAvgPool2d)
             and nn.modules.utils._pair(module.output_size) != (1, 1)]
    for name, module in found:
        parent_name, _, child = name.rpartition('.')
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, SlicedAdaptiveAvgPool2d(module.output_size))
    return len(found)


def flat_tensors(outputs):
    """The tensors of a (nested) tuple, list or dict output, in order."""
    if isinstance(outputs, torch.Tensor):
        return (outputs, )
    if isinstance(outputs, dict):
        outputs = list(outputs.values())
    if isinstance(outputs, (tuple, list)):
        return tuple(t for item in outputs for t in flat_tensors(item))
    raise TypeError(f'cannot export an output of type {type(outputs)}')


class TensorOutputs(nn.Module):
    """``forward(x)`` of a model as a flat tuple of tensors, for export.

    Args:
        model (nn.Module): The model.
        forward (callable, optional): ``forward(model, x)``. Defaults to
            ``model(x)``.
    """

    def __init__(self, model, forward=None):
        super().__init__()
        self.model = model
        self._forward = forward

    def forward(self, x):
        out = self._forward(self.model, x) if self._forward else \
            self.model(x)
        return flat_tensors(out)


def default_dynamic_axes(num_outputs, output_ranks):
    """Dynamic batch (all), height and width (input, 4-D outputs)."""
    axes = {'input': {0: 'batch', 2: 'height', 3: 'width'}}
    for i, rank in zip(range(num_outputs), output_ranks):
        axes[f'output{i}'] = {0: 'batch'}
        if rank == 4:
            axes[f'output{i}'].update({2: f'height{i}', 3: f'width{i}'})
    return axes


def export_onnx(model, example, path, opset_version=17, dynamic=True):
    """Export ``model`` (one image-batch input) to an ONNX file.

    The model is put in eval mode, its adaptive pools made exportable
    (:func:`replace_adaptive_pools`) and its outputs flattened; the file
    takes one input ``input`` and gives ``output0``, ``output1``...

    Args:
        model (nn.Module): The model; its outputs are tensors or (nested)
            tuples, lists or dicts of tensors.
        example (Tensor): (N, C, H, W) example input.
        path (str): The ONNX file to write.
        opset_version (int): ONNX opset, 11 to 17. Defaults to 17.
        dynamic (bool): Batch, height and width given at run time.
            Defaults to True.

    Returns:
        tuple[Tensor]: The outputs of PyTorch for ``example``.

    Raises:
        RuntimeError: If the graph uses operators outside the standard
            ONNX domain.
    """
    model = TensorOutputs(model) if not isinstance(model,
                                                   TensorOutputs) else model
    model.eval()
    replace_adaptive_pools(model)
    with torch.no_grad():
        reference = model(example)
    names = [f'output{i}' for i in range(len(reference))]
    axes = default_dynamic_axes(len(names), [t.dim() for t in reference]) \
        if dynamic else None
    with torch.no_grad(), warnings.catch_warnings():
        # Tracer notes on Python values (constant loop bounds and such),
        # and the TorchScript exporter's deprecation notice.
        warnings.simplefilter('ignore')
        torch.onnx.export(
            model, (example, ), path, opset_version=opset_version,
            dynamo=False, input_names=['input'], output_names=names,
            dynamic_axes=axes, do_constant_folding=True)
    custom = nonstandard_ops(path)
    if custom:
        raise RuntimeError(f'the exported graph uses operators outside the '
                           f'standard ONNX domain: {custom}')
    return reference


def nonstandard_ops(path):
    """``domain::op`` names of the nodes of an ONNX file outside the
    standard domain (sorted, unique)."""
    onnx, _ = require_onnxruntime()
    graph = onnx.load(path, load_external_data=False).graph
    return sorted({
        f'{node.domain}::{node.op_type}'
        for node in graph.node if node.domain not in STANDARD_DOMAINS
    })


def onnxruntime_session(path, threads=None):
    """An ONNX Runtime CPU session of ``path``.

    Args:
        path (str): ONNX file.
        threads (int, optional): Intra-op threads. Defaults to
            ONNX Runtime's choice.
    """
    _, ort = require_onnxruntime()
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(
        path, options, providers=['CPUExecutionProvider'])


def run_onnxruntime(session, x):
    """Run a session from :func:`onnxruntime_session` on the tensor ``x``.

    Returns:
        list[np.ndarray]: Its outputs.
    """
    return session.run(None, {'input': x.detach().cpu().numpy()})


def max_relative_error(actual, expected):
    """``max |a - e| / max |e|`` over pairs of outputs (the worst pair).

    Args:
        actual (Sequence[np.ndarray | Tensor]): Outputs to check.
        expected (Sequence[np.ndarray | Tensor]): Reference outputs.
    """
    if len(actual) != len(expected):
        raise ValueError(f'{len(actual)} outputs, {len(expected)} expected')
    worst = 0.
    for a, e in zip(actual, expected):
        a, e = _numpy(a), _numpy(e)
        if a.shape != e.shape:
            raise ValueError(f'output shape {a.shape}, expected {e.shape}')
        scale = float(np.abs(e).max()) if e.size else 0.
        diff = float(np.abs(a - e).max()) if e.size else 0.
        worst = max(worst, diff / scale if scale else diff)
    return worst


def _numpy(t):
    if isinstance(t, torch.Tensor):
        return t.detach().cpu().double().numpy()
    return np.asarray(t, dtype=np.float64)
