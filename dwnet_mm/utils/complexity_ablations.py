"""Params and FLOPs of the paper's ablation models (Tables 4, 6, 9, 10, 12)
beside the published ones.

Each row's model is built from its config (``configs/cls/ablations``, the
two baselines from their own configs) and counted at 224x224 with
:func:`~dwnet_mm.utils.complexity.count_complexity` (mmengine's
``FlopAnalyzer``, multiply-accumulates). FlopAnalyzer counts linear layers,
convolutions, both attention matmuls of Swin (q.k^T and weights.v), norms
(5 per LayerNorm element) and pooling; softmax, GELU, element-wise adds
and SE gates' multiplications are not counted. On mmpretrain's Swin-T it
gives 4.51G, the 4.5G that Swin's own counter (the paper's) reports.

    python tools/analysis/get_flops.py --table --tasks ablations
"""
import os.path as osp

from .complexity import count_complexity
from .frameworks import require_framework

DEFAULT_CONFIG_DIR = osp.join(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'configs',
    'cls')
SWIN_TINY_CONFIG = 'mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py'

# (name, config relative to configs/cls or 'mmpretrain::...', paper params
# in M, paper GFLOPs, paper ImageNet top-1); None where the paper gives no
# number.
ABLATION_MODELS = (
    ('Swin-T (baseline)', SWIN_TINY_CONFIG, 28, 4.5, 81.3),
    ('Swin-T static attention (T4, T10)',
     'ablations/swin-tiny-static-attn_16xb64_in1k.py', 26, 3.8, 80.3),
    ('Swin-T static, shared across windows (T10)',
     'ablations/swin-tiny-static-attn-shared_16xb64_in1k.py', None, None,
     80.3),
    ('Swin-T + SE (T6)', 'ablations/swin-tiny-se_16xb64_in1k.py', 29, 4.5,
     81.2),
    ('Swin-T BN (T9)', 'ablations/swin-tiny-bn_16xb64_in1k.py', None, None,
     80.9),
    ('Swin-T CC-BN (T9)', 'ablations/swin-tiny-ccbn_16xb64_in1k.py', None,
     None, 81.2),
    ('DWNet-T (baseline, T9 BN)', 'dwnet-tiny_8xb128_in1k.py', 24, 3.8,
     81.3),
    ('DWNet-T + SE (T6)', 'ablations/dwnet-tiny-se_8xb128_in1k.py', 24, 3.8,
     81.7),
    ('DWNet-T LN (T9)', 'ablations/dwnet-tiny-ln_8xb128_in1k.py', None,
     None, 81.2),
    ('DWNet-T CC-BN (T9)', 'ablations/dwnet-tiny-ccbn_8xb128_in1k.py', None,
     None, 81.7),
    ('DWNet-T DW shared across channels (T10)',
     'ablations/dwnet-tiny-shared-dw_8xb128_in1k.py', None, None, 81.1),
    ('DWNet-T + DW (T12)', 'ablations/dwnet-tiny-extra-dw_8xb128_in1k.py',
     24, 3.8, 81.9),
    ('DWNet-T + DW + SE (T12)',
     'ablations/dwnet-tiny-extra-dw-se_8xb128_in1k.py', 25, 3.8, 82.1),
)


def load_ablation_config(config, config_dir=DEFAULT_CONFIG_DIR):
    """Read a config given as in :data:`ABLATION_MODELS`."""
    from mmengine.config import Config
    if '::' in config:
        from mmengine.hub import get_config
        return get_config(config)
    return Config.fromfile(osp.join(config_dir, config))


def build_classifier(config, config_dir=DEFAULT_CONFIG_DIR):
    """The mmpretrain classifier of a config, whose ``forward(images)``
    returns the logits (for FLOP counting).

    Args:
        config (str): Config as in :data:`ABLATION_MODELS`.
        config_dir (str): Folder of the relative configs.
            Defaults to the repository's ``configs/cls``.

    Returns:
        nn.Module: The ``ImageClassifier``.
    """
    require_framework('mmpretrain', 'the ablation table')
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    import dwnet_mm  # noqa: F401 (registers the backbones of the configs)
    cfg = load_ablation_config(config, config_dir)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model)
    model.forward = lambda x: model.head(model.extract_feat(x))
    return model


def ablation_table(names=None, config_dir=DEFAULT_CONFIG_DIR,
                   input_size=224):
    """Our params/FLOPs of the ablation models beside the paper's.

    Args:
        names (Sequence[str], optional): Row names of
            :data:`ABLATION_MODELS`. Defaults to all.
        config_dir (str): Folder of the relative configs.
            Defaults to the repository's ``configs/cls``.
        input_size (int): Square input size. Defaults to 224.

    Returns:
        list[tuple]: (name, config, params M, GFLOPs, paper params M,
        paper GFLOPs, paper top-1) per row; the paper's are None where it
        gives no number.
    """
    models = {row[0]: row[1:] for row in ABLATION_MODELS}
    rows = []
    for name in names or models:
        if name not in models:
            raise KeyError(f'unknown ablation row {name!r}; one of '
                           f'{sorted(models)}')
        config, *paper = models[name]
        params, macs = count_complexity(
            build_classifier(config, config_dir),
            (1, 3, input_size, input_size))
        rows.append((name, config, params / 1e6, macs / 1e9, *paper))
    return rows


def format_ablation_table(rows):
    """Markdown table of :func:`ablation_table` rows."""

    def diff(ours, paper):
        return '-' if paper is None else f'{100 * (ours / paper - 1):+.1f}%'

    def published(value):
        return '-' if value is None else f'{value}'

    lines = [
        '| model | config | params (M) | paper | diff | FLOPs (G) | paper '
        '| diff | paper top-1 |', '|---|---|---|---|---|---|---|---|---|'
    ]
    for name, config, params, flops, p_params, p_flops, p_top1 in rows:
        lines.append(f'| {name} | {config} | {params:.2f} | '
                     f'{published(p_params)} | {diff(params, p_params)} | '
                     f'{flops:.2f} | {published(p_flops)} | '
                     f'{diff(flops, p_flops)} | {published(p_top1)} |')
    return '\n'.join(lines)
