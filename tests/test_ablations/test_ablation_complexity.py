"""Params and FLOPs of the ablation models against the paper's (within 3%).

Builds and counts the full-size models at 224x224 (a few seconds each),
once per module, for the rows with published numbers only.
"""
import os.path as osp

import pytest
from ablation_helpers import ABLATION_CONFIGS, REPO_ROOT

from dwnet_mm.utils.complexity_ablations import (ABLATION_MODELS,
                                                 ablation_table,
                                                 format_ablation_table)

PUBLISHED = [row[0] for row in ABLATION_MODELS if row[2] is not None]


@pytest.fixture(scope='module')
def table():
    return {row[0]: row for row in ablation_table(PUBLISHED)}


def test_rows_cover_every_config():
    configs = {row[1] for row in ABLATION_MODELS}
    assert configs == {f'ablations/{name}' for name in ABLATION_CONFIGS} | {
        'dwnet-tiny_8xb128_in1k.py',
        'mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py'
    }
    for config in configs - {'mmpretrain::swin_transformer/'
                             'swin-tiny_16xb64_in1k.py'}:
        assert osp.isfile(osp.join(REPO_ROOT, 'configs', 'cls', config))
    # The published ones: Tables 4, 6 and 12 and the two baselines.
    assert len(PUBLISHED) == 7


@pytest.mark.parametrize('name', PUBLISHED)
def test_params_and_flops_match_paper(table, name):
    _, _, params, flops, paper_params, paper_flops, _ = table[name]
    assert params == pytest.approx(paper_params, rel=.03)
    assert flops == pytest.approx(paper_flops, rel=.03)


def test_differences_between_rows(table):
    """What each ablation adds, in the counted numbers (M params, GFLOPs)."""
    params = {name: row[2] for name, row in table.items()}
    flops = {name: row[3] for name, row in table.items()}
    swin, dwnet = 'Swin-T (baseline)', 'DWNet-T (baseline, T9 BN)'
    # Static attention: -(q, k projections) - (q.k^T), i.e. 2 C^2 + 49 C
    # MACs per token over all blocks, about 0.76G.
    tokens = {96: 3136 * 2, 192: 784 * 2, 384: 196 * 6, 768: 49 * 2}
    removed = sum(n * (2 * c * c + 49 * c) for c, n in tokens.items())
    assert flops[swin] - flops['Swin-T static attention (T4, T10)'] == \
        pytest.approx(removed / 1e9, rel=1e-3)
    # SE: two C x C/16 linears per block, ~0.27M parameters.
    se = sum(d * (2 * c * round(c / 16) + c + round(c / 16))
             for c, d in ((96, 2), (192, 2), (384, 6), (768, 2)))
    assert params['Swin-T + SE (T6)'] - params[swin] == pytest.approx(
        se / 1e6, rel=1e-6)
    assert params['DWNet-T + SE (T6)'] - params[dwnet] == pytest.approx(
        se / 1e6, rel=1e-6)


def test_format(table):
    text = format_ablation_table(list(table.values()))
    lines = text.splitlines()
    assert lines[0].startswith('| model | config | params (M) | paper |')
    assert len(lines) == 2 + len(PUBLISHED)
    static = next(line for line in lines if 'static attention' in line)
    assert '| 26 |' in static and '| 3.8 |' in static and '| 80.3 |' in static
