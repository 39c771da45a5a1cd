"""Params and FLOPs of the UPerNet segmentors, counted as the paper did.

The paper's segmentation numbers come from the authors' mmseg 0.x
``tools/get_flops.py --shape 2048 512``: it builds the segmentor, replaces
``forward`` by ``forward_dummy`` and runs their copy of mmcv 1.x's
``get_model_complexity_info`` on one (3, 2048, 512) input. In mmseg 0.x,
``forward_dummy`` is ``encode_decode``: backbone, decode head and the
bilinear resize of the logits to the input size; the auxiliary head (a
training-only loss) is not run. Params are all trainable parameters of the
segmentor, the auxiliary head included.

Here the same forward (:class:`EncodeDecodeFlops`) is counted with mmengine's
``FlopAnalyzer`` (multiply-accumulates), with a per-module breakdown. The
counters' conventions differ a little. The authors' module-hook counter adds
conv biases, 1 per ReLU and 15 per GELU output element and 2 per LayerNorm
element, counts their dynamic DW-conv as a depth-wise conv, and sees no
functional op: neither the resizes of the decode head nor a custom CUDA op
such as the I-Dynamic aggregation. FlopAnalyzer traces convolutions
(functional ones too), matmuls, norms (5 per LayerNorm element),
interpolation (4 per output element) and pooling, and counts the I-Dynamic
aggregation (k*k per output element, :mod:`.flop_handles`). Height and
width are interchangeable: the count at (512, 2048) equals the count at
(2048, 512).

    python -m dwnet_mm.utils.complexity_seg                   # paper table
    python -m dwnet_mm.utils.complexity_seg --models upernet_dwnet_tiny
    python -m dwnet_mm.utils.complexity_seg --config CONFIG --shape 512 512
"""
import argparse
import os.path as osp

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.analysis import parameter_count

from .flop_handles import flop_analyzer
from .frameworks import require_framework

# name -> (config file in configs/seg, paper params in M, paper GFLOPs).
PAPER_SEG_MODELS = {
    'upernet_dwnet_tiny': ('upernet_dwnet_tiny_160k_ade20k.py', 56, 928),
    'upernet_dynamic_dwnet_tiny':
    ('upernet_dynamic_dwnet_tiny_160k_ade20k.py', 83, 928),
    'upernet_i_dynamic_dwnet_tiny':
    ('upernet_i_dynamic_dwnet_tiny_160k_ade20k.py', 58, 939),
    'upernet_dwnet_base': ('upernet_dwnet_base_160k_ade20k.py', 108, 1129),
    'upernet_dynamic_dwnet_base':
    ('upernet_dynamic_dwnet_base_160k_ade20k.py', 195, 1129),
    'upernet_i_dynamic_dwnet_base':
    ('upernet_i_dynamic_dwnet_base_160k_ade20k.py', 114, 1153),
}
# (N, C, H, W) of the paper's count: one 2048x512 image.
PAPER_SEG_INPUT_SHAPE = (1, 3, 512, 2048)
SEG_PARTS = ('backbone', 'decode_head', 'auxiliary_head')
DEFAULT_CONFIG_DIR = osp.join(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'configs',
    'seg')


def build_segmentor_from_config(config, cfg_options=None):
    """Build the segmentor of an mmseg config, SyncBN reverted to BN.

    Weights are not initialised (no pretrained checkpoint is read).

    Args:
        config (str | mmengine.Config): Config file or loaded config.
        cfg_options (dict, optional): Overrides merged into the config.

    Returns:
        nn.Module: The segmentor in eval mode.
    """
    require_framework('mmseg', 'counting segmentor params/FLOPs')
    from mmengine.config import Config
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope
    from mmengine.utils import import_modules_from_strings
    from mmseg.registry import MODELS

    cfg = Config.fromfile(config) if isinstance(config, str) else config
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model = MODELS.build(cfg.model)
    return revert_sync_batchnorm(model).eval()


class EncodeDecodeFlops(nn.Module):
    """The forward that mmseg 0.x counted (``forward_dummy``).

    Backbone, decode head and bilinear resize of the logits to the input
    size, as mmseg 0.x's ``encode_decode``; with ``with_auxiliary_head`` the
    auxiliary head also runs on the same features, to count it separately.

    Args:
        segmentor (nn.Module): An mmseg ``EncoderDecoder``.
        with_auxiliary_head (bool): Also run the auxiliary head.
            Defaults to False.
    """

    def __init__(self, segmentor, with_auxiliary_head=False):
        super().__init__()
        self.segmentor = segmentor
        self.with_auxiliary_head = with_auxiliary_head

    def forward(self, inputs):
        feats = self.segmentor.extract_feat(inputs)
        # Called as a module (not through ``predict``, which calls
        # ``forward`` directly), so that the head's own functional ops are
        # counted as the head's.
        decode_head = self.segmentor.decode_head
        seg_logits = F.interpolate(
            decode_head(feats),
            size=inputs.shape[2:],
            mode='bilinear',
            align_corners=decode_head.align_corners)
        if not (self.with_auxiliary_head
                and getattr(self.segmentor, 'with_auxiliary_head', False)):
            return seg_logits
        return seg_logits, self.segmentor.auxiliary_head(feats)


def count_segmentor_complexity(segmentor, input_shape=PAPER_SEG_INPUT_SHAPE):
    """Params and MACs of a segmentor, in total and per part.

    Args:
        segmentor (nn.Module): An mmseg ``EncoderDecoder`` (BN, not SyncBN).
        input_shape (tuple): (N, C, H, W). Defaults to one 512x2048 image.

    Returns:
        dict: ``params`` and ``macs``, each a dict over ``backbone``,
        ``decode_head``, ``auxiliary_head`` and ``other`` (ops outside these,
        e.g. the final resize), plus for params ``total`` (all, as the paper)
        and for MACs ``encode_decode`` (all but the auxiliary head, as the
        paper) and ``total``.
    """
    segmentor = segmentor.eval()
    params = parameter_count(segmentor)
    param_parts = {part: params.get(part, 0) for part in SEG_PARTS}
    param_parts['other'] = params[''] - sum(param_parts.values())
    param_parts['total'] = params['']

    model = EncodeDecodeFlops(segmentor, with_auxiliary_head=True)
    with torch.no_grad():
        by_module = flop_analyzer(model,
                                  torch.randn(*input_shape)).by_module()
    mac_parts = {
        part: by_module.get(f'segmentor.{part}', 0)
        for part in SEG_PARTS
    }
    total = by_module['']
    mac_parts['other'] = total - sum(mac_parts.values())
    mac_parts['encode_decode'] = total - mac_parts['auxiliary_head']
    mac_parts['total'] = total
    return dict(params=param_parts, macs=mac_parts)


def segmentation_table(names=None, config_dir=DEFAULT_CONFIG_DIR,
                       input_shape=PAPER_SEG_INPUT_SHAPE):
    """Measured and published params/FLOPs of the paper's segmentors.

    Args:
        names (Sequence[str], optional): Keys of :data:`PAPER_SEG_MODELS`.
            Defaults to all.
        config_dir (str): Folder of the seg configs.
        input_shape (tuple): (N, C, H, W). Defaults to 1x3x512x2048.

    Returns:
        list[dict]: Per model ``name``, ``complexity`` (see
        :func:`count_segmentor_complexity`), ``paper_params`` (M) and
        ``paper_flops`` (G).
    """
    rows = []
    for name in names or PAPER_SEG_MODELS:
        if name not in PAPER_SEG_MODELS:
            raise ValueError(f'unknown model {name!r}; choose from '
                             f'{sorted(PAPER_SEG_MODELS)}')
        config, paper_params, paper_flops = PAPER_SEG_MODELS[name]
        segmentor = build_segmentor_from_config(osp.join(config_dir, config))
        rows.append(
            dict(
                name=name,
                complexity=count_segmentor_complexity(segmentor,
                                                      input_shape),
                paper_params=paper_params,
                paper_flops=paper_flops))
        del segmentor
    return rows


def format_table(rows, input_shape=PAPER_SEG_INPUT_SHAPE):
    """Markdown tables: paper comparison, then the per-part breakdown."""
    h, w = input_shape[2:]
    lines = [
        f'UPerNet segmentors, input {h}x{w} (FLOPs = MACs, mmengine '
        'FlopAnalyzer; paper: mmcv-style counter on forward_dummy)', '',
        '| model | params (M) | paper | diff | GFLOPs (encode-decode) | '
        'paper | diff |', '|---|---|---|---|---|---|---|'
    ]
    for row in rows:
        params = row['complexity']['params']['total'] / 1e6
        flops = row['complexity']['macs']['encode_decode'] / 1e9
        lines.append(
            f"| {row['name']} | {params:.2f} | {row['paper_params']} | "
            f"{100 * (params / row['paper_params'] - 1):+.1f}% | "
            f"{flops:.1f} | {row['paper_flops']} | "
            f"{100 * (flops / row['paper_flops'] - 1):+.1f}% |")
    lines += [
        '', 'Breakdown: params (M) / GFLOPs per part (the auxiliary head is '
        'in the paper\'s params, not in its FLOPs)', '',
        '| model | backbone | decode_head | auxiliary_head | other |',
        '|---|---|---|---|---|'
    ]
    for row in rows:
        c = row['complexity']
        cells = [
            f"{c['params'][p] / 1e6:.2f} / {c['macs'][p] / 1e9:.1f}"
            for p in SEG_PARTS + ('other', )
        ]
        lines.append(f"| {row['name']} | " + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Params/FLOPs of the DWNet UPerNet segmentors')
    parser.add_argument(
        '--models', nargs='+', choices=sorted(PAPER_SEG_MODELS),
        help='paper models to count (default: all)')
    parser.add_argument(
        '--config', help='count this config instead of the paper models')
    parser.add_argument(
        '--config-dir', default=DEFAULT_CONFIG_DIR,
        help='folder of the seg configs (default: %(default)s)')
    parser.add_argument(
        '--shape', type=int, nargs=2, default=PAPER_SEG_INPUT_SHAPE[2:],
        metavar=('H', 'W'), help='input size (default: 512 2048)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import dwnet_mm  # noqa: F401
    input_shape = (1, 3) + tuple(args.shape)
    if args.config:
        c = count_segmentor_complexity(
            build_segmentor_from_config(args.config), input_shape)
        for key in ('params', 'macs'):
            scale, unit = (1e6, 'M') if key == 'params' else (1e9, 'G')
            print(key + ': ' + ', '.join(
                f'{part} {value / scale:.2f}{unit}'
                for part, value in c[key].items()))
        return
    rows = segmentation_table(args.models, args.config_dir, input_shape)
    print(format_table(rows, input_shape))


if __name__ == '__main__':
    main()
