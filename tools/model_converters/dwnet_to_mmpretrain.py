"""Convert an authors' DWNet classification checkpoint to mmpretrain.

The authors' release (DemystifyLocalViT) stores ImageNet models as
``{'model': state_dict, ...}`` with ``layers.{s}.blocks.{b}.attn2conv.*``
names and a ``head.{weight,bias}`` classifier. The output is an mmpretrain
``ImageClassifier`` checkpoint (``backbone.*`` + ``head.fc.*``) for
``load_from``, ``tools/test.py`` or a ``Pretrained`` init_cfg.

Example::

    python tools/model_converters/dwnet_to_mmpretrain.py \
        dwnet_tiny_224.pth checkpoints/dwnet-tiny_in1k.pth
"""
import argparse
import os
import os.path as osp
import re
from collections import OrderedDict

import torch

from dwnet_mm.converters import (convert_authors_backbone, is_authors_layout,
                                 load_checkpoint_file, save_checkpoint)
from dwnet_mm.safe_loading import UnsafeCheckpointError
from dwnet_mm.version import __version__

_STAGE_BLOCK = re.compile(r'^layers\.(\d+)\.blocks\.(\d+)\.')


def _find_state_dict(checkpoint):
    """The authors' weights: under 'model' (or 'state_dict'), or bare."""
    if not isinstance(checkpoint, dict):
        raise ValueError('unknown checkpoint layout: expected a dict, got '
                         f'{type(checkpoint).__name__}')
    for key in ('model', 'state_dict'):
        if isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
            break
    state_dict = {
        k[len('module.'):] if k.startswith('module.') else k: v
        for k, v in checkpoint.items() if isinstance(v, torch.Tensor)
    }
    if not is_authors_layout(state_dict):
        if any(k.startswith('backbone.stages.') for k in state_dict):
            raise ValueError(
                'this checkpoint is already in dwnet_mm/mmpretrain layout '
                '("backbone.stages.*"); use it directly, no conversion needed')
        raise ValueError(
            'unknown checkpoint layout: expected the authors\' DWNet '
            'classification weights ("layers.*.blocks.*.attn2conv.*", under '
            f'"model"); first keys: {list(state_dict)[:5]}')
    if any(k.startswith('backbone.') for k in state_dict) or any(
            re.match(r'^norm\d\.', k) for k in state_dict):
        raise ValueError(
            'this is a detection/segmentation release of the authors, not a '
            'classification one; no conversion is needed: pass it to the '
            'backbone as init_cfg=dict(type="Pretrained", checkpoint=...)')
    if 'head.weight' not in state_dict or 'norm.weight' not in state_dict:
        raise ValueError(
            'the checkpoint has the authors\' backbone names but no '
            'classifier ("head.weight") or final norm ("norm.weight"); '
            'only complete ImageNet classification files can be converted')
    return state_dict


def describe_arch(state_dict):
    """Backbone settings that the checkpoint was trained with.

    Args:
        state_dict (dict): The authors' classification weights.

    Returns:
        dict: ``channels``, ``depths``, ``conv_type``, ``kernel_size`` and
        ``num_classes``, to check against the config that will load it.
    """
    depths = {}
    for key in state_dict:
        match = _STAGE_BLOCK.match(key)
        if match:
            stage, block = map(int, match.groups())
            depths[stage] = max(depths.get(stage, 0), block + 1)
    num_stages = max(depths) + 1
    channels = [
        int(state_dict[f'layers.{s}.blocks.0.attn2conv.conv0.weight'].shape[0])
        for s in range(num_stages)
    ]
    prefix = 'layers.0.blocks.0.attn2conv.conv.'
    if prefix + 'weight' in state_dict:
        conv_type = 'static'
        kernel_size = int(state_dict[prefix + 'weight'].shape[-1])
    elif prefix + 'conv1.weight' in state_dict:
        conv_type = 'dynamic'
        kernel_size = round((state_dict[prefix + 'conv2.weight'].shape[0] /
                             channels[0])**0.5)
    elif prefix + 'conv1.0.weight' in state_dict:
        conv_type = 'i_dynamic'
        # k*k*G outputs with G groups; G is not stored, report k*k*G.
        kernel_size = None
    else:
        found = [k for k in state_dict if k.startswith(prefix)]
        raise ValueError('unknown checkpoint layout: unrecognised '
                         f'depth-wise conv parameters {found}')
    return dict(
        channels=channels,
        depths=[depths[s] for s in range(num_stages)],
        conv_type=conv_type,
        kernel_size=kernel_size,
        num_classes=int(state_dict['head.weight'].shape[0]))


def convert(checkpoint, source=None):
    """Convert a loaded authors' classification checkpoint.

    Args:
        checkpoint (dict): The loaded ``.pth`` file.
        source (str, optional): File name to record in the meta.

    Returns:
        dict: ``{'state_dict': {'backbone.*', 'head.fc.*'}, 'meta': {...}}``.
    """
    state_dict = _find_state_dict(checkpoint)
    arch = describe_arch(state_dict)
    backbone, head = convert_authors_backbone(
        state_dict, num_stages=len(arch['depths']))
    converted = OrderedDict()
    for key, value in backbone.items():
        converted[f'backbone.{key}'] = value
    for key, value in head.items():
        converted[f'head.fc.{key}'] = value
    meta = dict(
        converted_from=osp.basename(source) if source else None,
        source_layout='DemystifyLocalViT (authors)',
        dwnet_mm_version=__version__,
        arch=arch)
    return dict(state_dict=converted, meta=meta)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert an authors\' DWNet ImageNet checkpoint to an '
        'mmpretrain ImageClassifier checkpoint')
    parser.add_argument('src', help='the authors\' .pth file')
    parser.add_argument(
        'dst', help='output file: .pth, or .safetensors (weights only, '
        'cannot run code when read: the format to share)')
    parser.add_argument(
        '--trust-checkpoint', action='store_true',
        help='src is trusted: if the safe loader refuses it, unpickle it '
        'with full pickle, which runs any code it contains')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        checkpoint = load_checkpoint_file(args.src,
                                          trust=args.trust_checkpoint)
    except UnsafeCheckpointError as e:
        raise SystemExit(f'error: {e}')
    result = convert(checkpoint, source=args.src)
    dst_dir = osp.dirname(osp.abspath(args.dst))
    os.makedirs(dst_dir, exist_ok=True)
    save_checkpoint(result, args.dst)
    arch = result['meta']['arch']
    print(f'saved {len(result["state_dict"])} tensors to {args.dst}; '
          f'backbone: channels={arch["channels"]} depths={arch["depths"]} '
          f'conv_type={arch["conv_type"]!r} kernel_size={arch["kernel_size"]}'
          f', head: {arch["num_classes"]} classes')


if __name__ == '__main__':
    main()
