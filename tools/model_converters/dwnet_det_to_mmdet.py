"""Convert the authors' DWNet Cascade Mask R-CNN checkpoints (mmdet 2.x) to
mmdet 3.x.

    python tools/model_converters/dwnet_det_to_mmdet.py \\
        cascade_mask_rcnn_dwnet_tiny_3x.pth cascade_dwnet_tiny_3x_mmdet.pth \\
        --config configs/det/cascade_dwnet_tiny_3x.py
    python tools/test.py configs/det/cascade_dwnet_tiny_3x.py \\
        cascade_dwnet_tiny_3x_mmdet.pth

The authors' release holds ``state_dict`` with ``backbone.`` keys in their
own names (``layers.{s}.blocks.{b}.attn2conv.*``), renamed here to
dwnet_mm's DWNet names with
:func:`dwnet_mm.converters.convert_authors_backbone`. Everything else
passes through unchanged: mmdet 3.x kept the 2.x parameter names of the
Cascade Mask R-CNN parts, ``neck.{lateral,fpn}_convs.{i}.conv`` (FPN),
``rpn_head.rpn_{conv,cls,reg}`` (RPNHead),
``roi_head.bbox_head.{s}.{shared_convs.{j}.{conv,bn},shared_fcs.0,fc_cls,
fc_reg}`` (Shared4Conv1FCBBoxHead) and
``roi_head.mask_head.{s}.{convs.{j}.conv,upsample,conv_logits}``
(FCNMaskHead), with the same shapes and class order (80 classes, background
last in ``fc_cls``). With ``--config`` the result is loaded into the
config's detector and any missing, unexpected or mis-shaped key is an
error. The 2.x ``meta`` (``CLASSES``, ``PALETTE``) becomes mmengine's
``dataset_meta``; the optimizer state is dropped.
"""
import argparse

BACKBONE_PREFIX = 'backbone.'
DETECTOR_PREFIXES = ('backbone.', 'neck.', 'rpn_head.', 'roi_head.')


def convert_det_checkpoint(checkpoint, source=None):
    """Convert a loaded checkpoint of the authors' release (``state_dict``
    or a bare state dict, optionally ``meta``); see
    :func:`dwnet_mm.converters.convert_authors_full_checkpoint`."""
    from dwnet_mm.converters import convert_authors_full_checkpoint
    return convert_authors_full_checkpoint(
        checkpoint, 'mmdet 2.x detector', 'dwnet_det_to_mmdet',
        'mmdet_version', DETECTOR_PREFIXES, source=source)


def check_against_config(state_dict, config):
    """Load ``state_dict`` into the detector of ``config``, strictly.

    Raises:
        ValueError: Naming the missing, unexpected and mis-shaped keys.
    """
    from dwnet_mm.utils.complexity_det import build_detector
    detector = build_detector(config)
    own = detector.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    mismatched = [
        f'{k}: checkpoint {tuple(state_dict[k].shape)} vs model '
        f'{tuple(own[k].shape)}' for k in sorted(set(own) & set(state_dict))
        if own[k].shape != state_dict[k].shape
    ]
    if missing or unexpected or mismatched:
        lines = [f'the converted checkpoint does not fit {config}:']
        for title, keys in (('missing', missing), ('unexpected', unexpected),
                            ('shape mismatch', mismatched)):
            if keys:
                lines.append(f'  {title} ({len(keys)}): {keys[:8]}')
        lines.append('  check that the config matches the checkpoint '
                     '(arch, conv_type, number of classes)')
        raise ValueError('\n'.join(lines))
    detector.load_state_dict(state_dict, strict=True)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert an authors\' DWNet Cascade Mask R-CNN checkpoint '
        '(mmdet 2.x) to mmdet 3.x / dwnet_mm names')
    parser.add_argument('src', help='authors\' checkpoint (.pth)')
    parser.add_argument('dst', help='output checkpoint (.pth, or '
                        '.safetensors: weights only, cannot run code when '
                        'read)')
    parser.add_argument(
        '--trust-checkpoint', action='store_true',
        help='src is trusted: if the safe loader refuses it, unpickle it '
        'with full pickle, which runs any code it contains')
    parser.add_argument(
        '--config',
        help='check that the result loads strictly into this config\'s '
        'detector (e.g. configs/det/cascade_dwnet_tiny_3x.py)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from dwnet_mm.converters import convert_checkpoint_file
    from dwnet_mm.safe_loading import UnsafeCheckpointError

    def convert(checkpoint, source):
        converted = convert_det_checkpoint(checkpoint, source)
        if args.config:
            check_against_config(converted['state_dict'], args.config)
        return converted

    try:
        converted = convert_checkpoint_file(args.src, args.dst, convert,
                                            trust=args.trust_checkpoint)
    except (ValueError, UnsafeCheckpointError) as e:
        raise SystemExit(f'error: {e}')
    num_backbone = sum(
        k.startswith(BACKBONE_PREFIX) for k in converted['state_dict'])
    checked = f', checked against {args.config}' if args.config else ''
    print(f'wrote {args.dst}: {len(converted["state_dict"])} tensors '
          f'({num_backbone} backbone tensors renamed{checked})')


if __name__ == '__main__':
    main()
