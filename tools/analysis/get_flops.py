"""Params and FLOPs (multiply-accumulates, mmengine's analysis).

    python tools/analysis/get_flops.py --table            # paper comparison
    python tools/analysis/get_flops.py --table --models dwnet_tiny
"""
import argparse
import sys

import dwnet_mm  # noqa: F401
from dwnet_mm.utils.complexity import PAPER_CLS_MODELS, classification_table


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--table', action='store_true',
        help='print our params/FLOPs beside the paper\'s for all models')
    parser.add_argument(
        '--models', nargs='+', choices=sorted(PAPER_CLS_MODELS),
        help='classification models for --table (default: all)')
    parser.add_argument(
        '--size', type=int, default=224, help='input size for --table')
    return parser.parse_args()


def print_classification_table(names, size):
    print(f'ImageNet classifiers at {size}x{size} (FLOPs = MACs)\n')
    print('| model | params (M) | paper | diff | FLOPs (G) | paper | diff |')
    print('|---|---|---|---|---|---|---|')
    for name, params, flops, p_params, p_flops in classification_table(
            names, size):
        print(f'| {name} | {params:.2f} | {p_params} | '
              f'{100 * (params / p_params - 1):+.1f}% | {flops:.2f} | '
              f'{p_flops} | {100 * (flops / p_flops - 1):+.1f}% |')


def main():
    args = parse_args()
    if not args.table:
        sys.exit('nothing to do: pass --table')
    print_classification_table(args.models, args.size)


if __name__ == '__main__':
    main()
