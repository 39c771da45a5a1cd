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

BACKBONE_PREFIX = 'backbone.'


def convert_seg_checkpoint(checkpoint, source=None):
    """Convert a loaded checkpoint of the authors' release (``state_dict``
    or a bare state dict, optionally ``meta``); see
    :func:`dwnet_mm.converters.convert_authors_full_checkpoint`."""
    from dwnet_mm.converters import convert_authors_full_checkpoint
    return convert_authors_full_checkpoint(
        checkpoint, 'mmseg 0.x segmentor', 'dwnet_seg_to_mmseg',
        'mmseg_version', source=source)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert an authors\' DWNet UPerNet checkpoint '
        '(mmseg 0.x) to mmseg 1.x / dwnet_mm names')
    parser.add_argument('src', help='authors\' checkpoint (.pth)')
    parser.add_argument('dst', help='output checkpoint (.pth, or '
                        '.safetensors: weights only, cannot run code when '
                        'read)')
    parser.add_argument(
        '--trust-checkpoint', action='store_true',
        help='src is trusted: if the safe loader refuses it, unpickle it '
        'with full pickle, which runs any code it contains')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from dwnet_mm.converters import convert_checkpoint_file
    from dwnet_mm.safe_loading import UnsafeCheckpointError
    try:
        converted = convert_checkpoint_file(args.src, args.dst,
                                            convert_seg_checkpoint,
                                            trust=args.trust_checkpoint)
    except (ValueError, UnsafeCheckpointError) as e:
        raise SystemExit(f'error: {e}')
    num_backbone = sum(
        k.startswith(BACKBONE_PREFIX) for k in converted['state_dict'])
    print(f'wrote {args.dst}: {len(converted["state_dict"])} tensors '
          f'({num_backbone} backbone tensors renamed)')


if __name__ == '__main__':
    main()
