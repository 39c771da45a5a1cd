"""Convert the authors' DWNet UPerNet checkpoints (mmseg 0.x) to mmseg 1.x.

    python tools/model_converters/dwnet_seg_to_mmseg.py \\
        upernet_dwnet_tiny_ade20k.pth upernet_dwnet_tiny_mmseg.pth
    python tools/test.py configs/seg/upernet_dwnet_tiny_160k_ade20k.py \\
        upernet_dwnet_tiny_mmseg.pth

The authors' release holds ``state_dict`` with ``backbone.`` keys in their
own names (``layers.{s}.blocks.{b}.attn2conv.*``), renamed here to
dwnet_mm's DWNet names with
:func:`dwnet_mm.converters.convert_authors_backbone`.
The heads need no renaming: mmseg 1.x kept the 0.x parameter names of
UPerHead (``psp_modules``, ``bottleneck``, ``lateral_convs``, ``fpn_convs``,
``fpn_bottleneck``, ``conv_seg``) and FCNHead (``convs``, ``conv_seg``), so
``decode_head.*`` and ``auxiliary_head.*`` pass through unchanged. The 0.x
``meta`` (``CLASSES``, ``PALETTE``) becomes mmengine's ``dataset_meta``; the
optimizer state is dropped.
"""
import argparse
import os.path as osp

import torch

BACKBONE_PREFIX = 'backbone.'


def convert_seg_state_dict(state_dict):
    """Rename the backbone keys of an authors' UPerNet state dict.

    Args:
        state_dict (dict): mmseg 0.x segmentor state dict of the authors'
            release (keys ``backbone.*``, ``decode_head.*``,
            ``auxiliary_head.*``).

    Returns:
        dict: The mmseg 1.x state dict for dwnet_mm's DWNet backbone.
    """
    from dwnet_mm.converters import convert_authors_full_model
    return convert_authors_full_model(
        state_dict, 'mmseg 0.x segmentor')


def convert_seg_checkpoint(checkpoint, source=None):
    """Convert a loaded mmseg 0.x checkpoint of the authors' release.

    Args:
        checkpoint (dict): The loaded file: ``state_dict`` (or a bare state
            dict) and optionally ``meta``.
        source (str, optional): Where it came from, kept in ``meta``.

    Returns:
        dict: ``state_dict`` and ``meta`` for mmengine's ``load_checkpoint``.
    """
    if not isinstance(checkpoint, dict):
        raise ValueError(f'a checkpoint must be a dict, got '
                         f'{type(checkpoint).__name__}')
    state_dict = checkpoint.get('state_dict', checkpoint)
    old_meta = checkpoint.get('meta') or {}
    meta = dict(converted_by='dwnet_seg_to_mmseg')
    if source:
        meta['converted_from'] = source
    dataset_meta = {}
    if old_meta.get('CLASSES') is not None:
        dataset_meta['classes'] = tuple(old_meta['CLASSES'])
    if old_meta.get('PALETTE') is not None:
        dataset_meta['palette'] = [list(c) for c in old_meta['PALETTE']]
    if dataset_meta:
        meta['dataset_meta'] = dataset_meta
    for key in ('iter', 'epoch', 'mmseg_version'):
        if key in old_meta:
            meta[f'source_{key}'] = old_meta[key]
    return dict(state_dict=convert_seg_state_dict(state_dict), meta=meta)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert an authors\' DWNet UPerNet checkpoint '
        '(mmseg 0.x) to mmseg 1.x / dwnet_mm names')
    parser.add_argument('src', help='authors\' checkpoint (.pth)')
    parser.add_argument('dst', help='output checkpoint (.pth)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from dwnet_mm.converters import load_checkpoint_file
    if osp.abspath(args.src) == osp.abspath(args.dst):
        raise SystemExit('error: dst must differ from src')
    checkpoint = load_checkpoint_file(args.src)
    try:
        converted = convert_seg_checkpoint(checkpoint, osp.basename(args.src))
    except ValueError as e:
        raise SystemExit(f'error: {e}')
    torch.save(converted, args.dst)
    num_backbone = sum(
        k.startswith(BACKBONE_PREFIX) for k in converted['state_dict'])
    print(f'wrote {args.dst}: {len(converted["state_dict"])} tensors '
          f'({num_backbone} backbone tensors renamed)')


if __name__ == '__main__':
    main()
