"""Params and FLOPs (multiply-accumulates, mmengine's FlopAnalyzer).

    python tools/analysis/get_flops.py --table                 # all tasks
    python tools/analysis/get_flops.py --table --tasks cls     # 224x224
    python tools/analysis/get_flops.py --table --tasks ablations  # 224x224
    python tools/analysis/get_flops.py configs/det/cascade_dwnet_tiny_3x.py
    python tools/analysis/get_flops.py CONFIG --shape 512 2048

The paper's protocols: classifiers at 224x224; detectors at 1280x800 as
mmdet 2.x's forward_dummy (backbone, FPN, RPN convs, 3 cascade box heads on
1000 proposals, mask heads on 100); segmentors at 512x2048 encode-decode
(no auxiliary head in the FLOPs, in the params).
"""
import argparse
import os.path as osp
import sys

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEFAULT_SHAPES = {'mmpretrain': (224, 224), 'mmdet': (1280, 800),
                  'mmseg': (512, 2048)}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', nargs='?', help='a cls, det or seg config')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input size (default: the paper\'s per task)')
    parser.add_argument('--table', action='store_true',
                        help='our params/FLOPs beside the paper\'s')
    parser.add_argument('--tasks', nargs='+', default=['cls', 'det', 'seg'],
                        choices=['cls', 'det', 'seg', 'ablations'],
                        help='tasks of --table (det/seg take minutes each; '
                        'ablations: the paper\'s ablation models, '
                        'Tables 4, 6, 9, 10, 12)')
    return parser.parse_args()


def _pct(ours, paper):
    return f'{100 * (ours / paper - 1):+.1f}%'


def print_cls_table():
    from dwnet_mm.utils.complexity import classification_table
    print('ImageNet classifiers at 224x224 (FLOPs = MACs)\n')
    print('| model | params (M) | paper | diff | FLOPs (G) | paper | diff |')
    print('|---|---|---|---|---|---|---|')
    for name, params, flops, p_params, p_flops in classification_table():
        print(f'| {name} | {params:.2f} | {p_params} | '
              f'{_pct(params, p_params)} | {flops:.2f} | {p_flops} | '
              f'{_pct(flops, p_flops)} |')


def print_det_table():
    from dwnet_mm.utils.complexity_det import detection_table
    print('\nCascade Mask R-CNN detectors at 1280x800 (FLOPs = MACs)\n')
    print('| model | params (M) | paper | diff | FLOPs (G) | paper | diff | '
          'backbone / neck / rpn / roi (G) |')
    print('|---|---|---|---|---|---|---|---|')
    for name, result, p_params, p_flops in detection_table(
            osp.join(REPO, 'configs', 'det')):
        params, flops = result['params'] / 1e6, result['flops'] / 1e9
        parts = ' / '.join(f'{v / 1e9:.1f}'
                           for v in result['flops_by_part'].values())
        print(f'| {name} | {params:.2f} | {p_params} | '
              f'{_pct(params, p_params)} | {flops:.1f} | {p_flops} | '
              f'{_pct(flops, p_flops)} | {parts} |')


def print_seg_table():
    from dwnet_mm.utils.complexity_seg import format_table, segmentation_table
    print()
    print(format_table(segmentation_table(
        config_dir=osp.join(REPO, 'configs', 'seg'))))


def print_ablation_table():
    from dwnet_mm.utils.complexity_ablations import (ablation_table,
                                                     format_ablation_table)
    print('\nAblation models (paper Tables 4, 6, 9, 10, 12) at 224x224 '
          '(FLOPs = MACs; paper top-1 as published)\n')
    print(format_ablation_table(ablation_table(
        config_dir=osp.join(REPO, 'configs', 'cls'))))


def print_config_complexity(config, shape):
    from dwnet_mm.runner_setup import load_config
    from dwnet_mm.utils.complexity import count_complexity
    cfg = load_config(config)
    scope = cfg.get('default_scope')
    h, w = shape or DEFAULT_SHAPES.get(scope, (224, 224))
    if scope == 'mmdet':
        from dwnet_mm.utils.complexity_det import detector_complexity
        result = detector_complexity(config, (h, w))
        params, flops = result['params'], result['flops']
        parts = result['flops_by_part']
    elif scope == 'mmseg':
        from dwnet_mm.utils.complexity_seg import (
            build_segmentor_from_config, count_segmentor_complexity)
        result = count_segmentor_complexity(
            build_segmentor_from_config(config), (1, 3, h, w))
        params, flops = result['params']['total'], \
            result['macs']['encode_decode']
        parts = {k: v for k, v in result['macs'].items() if k != 'total'}
    elif scope == 'mmpretrain':
        from mmengine.registry import DefaultScope
        from mmpretrain.registry import MODELS

        import dwnet_mm  # noqa: F401
        with DefaultScope.overwrite_default_scope('mmpretrain'):
            model = MODELS.build(cfg.model)
        model.forward = lambda x: model.head(model.extract_feat(x))
        params, flops = count_complexity(model, (1, 3, h, w))
        parts = {}
    else:
        sys.exit(f'error: {config}: default_scope {scope!r} is not one of '
                 'mmpretrain, mmdet, mmseg')
    print(f'{config} at {h}x{w}: params {params / 1e6:.2f} M, '
          f'FLOPs {flops / 1e9:.2f} G (MACs)')
    for part, value in parts.items():
        print(f'  {part}: {value / 1e9:.2f} G')


def main():
    args = parse_args()
    if args.table:
        printers = dict(cls=print_cls_table, det=print_det_table,
                        seg=print_seg_table, ablations=print_ablation_table)
        for task in args.tasks:
            printers[task]()
    elif args.config:
        if not osp.isfile(args.config):
            sys.exit(f'error: config file {args.config!r} does not exist')
        print_config_complexity(args.config, args.shape)
    else:
        sys.exit('error: pass a config file or --table')


if __name__ == '__main__':
    main()
