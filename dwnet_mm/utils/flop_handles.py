"""FLOP handles of dwnet_mm's own ops for mmengine's ``FlopAnalyzer``.

``FlopAnalyzer`` traces the model with ``torch.jit`` and counts the traced
ops it has a handle for. A ``torch.autograd.Function`` is traced as one
opaque ``prim::PythonOp.<name of the Function>`` node: without a handle it
counts nothing there (and warns). The I-Dynamic conv, its kernel
generator's last layer included, is such a Function
(``InhomogeneousDynamicConvFunction``, which the layer also takes while
traced), so an I-Dynamic model needs :data:`DWNET_FLOP_HANDLES`.

Importing dwnet_mm registers these handles nowhere: apply them to the
analyzer that counts, e.g.::

    from mmengine.analysis import FlopAnalyzer
    from dwnet_mm.utils.flop_handles import register_flop_handles

    analyzer = register_flop_handles(FlopAnalyzer(model, inputs))
    macs = analyzer.total()

or build it with :func:`flop_analyzer`. dwnet_mm's counters
(:mod:`dwnet_mm.utils.complexity` and its det/seg twins, which
``tools/analysis/get_flops.py`` runs) do so. mmengine's
``get_model_complexity_info`` (run by mmpretrain's, mmdet's and mmseg's own
``get_flops`` tools) builds its own analyzer and so does not count the
I-Dynamic aggregation.
"""
import math

from mmengine.analysis import FlopAnalyzer
from mmengine.analysis.jit_handles import get_shape

# How a trace names the I-Dynamic conv's autograd Function,
# InhomogeneousDynamicConvFunction (a test reads it from a trace).
I_DYNAMIC_CONV_OP = 'prim::PythonOp.InhomogeneousDynamicConvFunction'


def i_dynamic_conv_flop_handle(inputs, outputs):
    """MACs of the I-Dynamic conv: the kernel generator's last layer
    (C_h x k*k*G per pixel, as a linear layer counts) and the aggregation
    (k*k per output element, as a static depth-wise conv counts).

    Args:
        inputs (list[torch._C.Value]): The op's traced inputs: the input
            (N, H, W, C), the generator's features (N, H, W, C_h), its
            weight (k*k, G, C_h) and bias.
        outputs (list[torch._C.Value]): Its traced outputs (unused).

    Returns:
        int: Multiply-accumulates.
    """
    x_shape, hidden_shape = get_shape(inputs[0]), get_shape(inputs[1])
    taps, groups, _ = get_shape(inputs[2])
    return taps * (math.prod(x_shape) + math.prod(hidden_shape) * groups)


# mmengine op name -> handle, for FlopAnalyzer.set_op_handle.
DWNET_FLOP_HANDLES = {I_DYNAMIC_CONV_OP: i_dynamic_conv_flop_handle}


def register_flop_handles(analyzer):
    """Teach one analyzer dwnet_mm's ops (:data:`DWNET_FLOP_HANDLES`).

    Args:
        analyzer (FlopAnalyzer): mmengine's analyzer, before it counts.

    Returns:
        FlopAnalyzer: ``analyzer`` itself, for chaining.
    """
    return analyzer.set_op_handle(**DWNET_FLOP_HANDLES)


def flop_analyzer(model, inputs, quiet=True):
    """A ``FlopAnalyzer`` of ``model`` that counts dwnet_mm's ops.

    Args:
        model (nn.Module): The model, in the mode to count (eval).
        inputs (Tensor | tuple[Tensor]): Its forward's inputs.
        quiet (bool): Skip the warnings about ops without a handle (the
            element-wise ops, which FlopAnalyzer does not count) and about
            modules the forward does not call. Defaults to True.

    Returns:
        FlopAnalyzer: The analyzer; it traces on its first query.
    """
    analyzer = register_flop_handles(FlopAnalyzer(model, inputs))
    if quiet:
        analyzer.unsupported_ops_warnings(False)
        analyzer.uncalled_modules_warnings(False)
    return analyzer
