import json
import subprocess
import sys

import pytest
import torch
from mmengine.analysis import FlopAnalyzer

from dwnet_mm.models.layers import InhomogeneousDynamicConv2d
from dwnet_mm.utils.complexity import PAPER_CLS_MODELS, classification_table
from dwnet_mm.utils.flop_handles import (DWNET_FLOP_HANDLES,
                                         I_DYNAMIC_CONV_OP, flop_analyzer,
                                         i_dynamic_conv_flop_handle,
                                         register_flop_handles)


@pytest.mark.parametrize(
    'name', ['dwnet_tiny', 'dynamic_dwnet_tiny', 'i_dynamic_dwnet_tiny'])
def test_tiny_params_and_flops_match_paper(name):
    (row, ) = classification_table([name])
    _, params, gflops, paper_params, paper_gflops = row
    assert abs(params / paper_params - 1) < 0.02, (params, paper_params)
    assert abs(gflops / paper_gflops - 1) < 0.02, (gflops, paper_gflops)


def test_i_dynamic_op_is_counted():
    # Without a handle for the autograd op, i_dynamic would count fewer
    # MACs than the static model; with it, its extra cost is the kernel
    # generator alone (0.6G in the paper).
    rows = {r[0]: r for r in classification_table(
        ['dwnet_tiny', 'i_dynamic_dwnet_tiny'])}
    extra = rows['i_dynamic_dwnet_tiny'][2] - rows['dwnet_tiny'][2]
    assert 0.55 < extra < 0.7
    assert set(PAPER_CLS_MODELS) >= set(rows)


# What an interpreter's mmengine FLOP/activation tables hold; argv[1] == '1'
# imports dwnet_mm and the modules that count FLOPs first.
MMENGINE_TABLES = '''
import json
import sys

if sys.argv[1] == '1':
    import dwnet_mm  # noqa: F401
    import dwnet_mm.models.layers.dynamic_conv  # noqa: F401
    import dwnet_mm.utils.complexity  # noqa: F401
    import dwnet_mm.utils.flop_handles  # noqa: F401
from mmengine.analysis import complexity_analysis, jit_analysis

print(json.dumps(dict(
    flop=sorted(complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS),
    activation=sorted(complexity_analysis._DEFAULT_SUPPORTED_ACT_OPS),
    ignored=sorted(jit_analysis._IGNORED_OPS))))
'''


def _mmengine_tables(import_dwnet):
    result = subprocess.run(
        [sys.executable, '-c', MMENGINE_TABLES, '1' if import_dwnet else '0'],
        capture_output=True, text=True, timeout=300, check=True)
    return json.loads(result.stdout.splitlines()[-1])


def test_import_leaves_mmengine_flop_tables_alone():
    # dwnet_mm's handles are applied per analyzer (flop_handles), never
    # written into mmengine's defaults.
    tables = _mmengine_tables(import_dwnet=True)
    assert I_DYNAMIC_CONV_OP not in tables['flop']
    assert tables == _mmengine_tables(import_dwnet=False)


def _i_dynamic_layer_flops(analyzer_of):
    torch.manual_seed(0)
    layer = InhomogeneousDynamicConv2d(64, 7, i_dynamic_groups=32).eval()
    x = torch.randn(2, 64, 9, 12)
    with torch.no_grad():
        analyzer = analyzer_of(layer, x)
        analyzer.unsupported_ops_warnings(False)
        return analyzer.by_operator(), analyzer.unsupported_ops()


def test_i_dynamic_aggregation_counts_k_squared_macs_per_output():
    # The traced layer runs the autograd Function (a PythonOp node), which
    # only the handle counts: 7*7 MACs per output element, and the kernel
    # generator's last layer (16 -> 49 * 32 per pixel) inside it.
    by_op, _ = _i_dynamic_layer_flops(flop_analyzer)
    assert by_op['PythonOp.InhomogeneousDynamicConvFunction'] == \
        49 * 2 * 64 * 9 * 12 + 2 * 9 * 12 * 16 * 49 * 32
    # Without dwnet_mm's handles the node is there, uncounted: the handle
    # is needed, under the name the trace gives the op.
    by_op, unsupported = _i_dynamic_layer_flops(FlopAnalyzer)
    assert 'PythonOp.InhomogeneousDynamicConvFunction' not in by_op
    assert unsupported[I_DYNAMIC_CONV_OP] == 1
    assert DWNET_FLOP_HANDLES[I_DYNAMIC_CONV_OP] is i_dynamic_conv_flop_handle


def test_register_flop_handles_returns_the_analyzer():
    layer = InhomogeneousDynamicConv2d(32, 3, i_dynamic_groups=4).eval()
    analyzer = FlopAnalyzer(layer, torch.randn(1, 32, 4, 4))
    assert register_flop_handles(analyzer) is analyzer
