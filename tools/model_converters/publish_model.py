"""Strip training state from a checkpoint and name it by its sha256.

    python tools/model_converters/publish_model.py work_dirs/x/epoch_36.pth \
        dwnet_tiny_cascade.pth
    -> dwnet_tiny_cascade-<first 8 hex digits of sha256>.pth
"""
import argparse
import hashlib
import os
import sys

import torch

# Training state that a published model does not need.
TRAINING_KEYS = ('optimizer', 'message_hub', 'param_schedulers', 'scheduler',
                 'lr_scheduler', 'amp', 'ema_state_dict')


def publish(in_file, out_file, trust=None):
    """Write the stripped checkpoint and return its final path.

    ``in_file`` is read with dwnet_mm's safe loader (mmengine training
    checkpoints and the authors' files load; nothing in them runs);
    ``trust`` allows full pickle for a trusted file it refuses.
    """
    from dwnet_mm.safe_loading import safe_load
    checkpoint = safe_load(in_file, map_location='cpu', trust=trust)
    if not isinstance(checkpoint, dict) or not any(
            k in checkpoint for k in ('state_dict', 'model')):
        raise ValueError(f'{in_file} has no "state_dict" or "model" entry: '
                         'not a model checkpoint')
    for key in TRAINING_KEYS:
        checkpoint.pop(key, None)
    stem = out_file[:-4] if out_file.endswith('.pth') else out_file
    tmp = stem + '.tmp.pth'
    torch.save(checkpoint, tmp)
    with open(tmp, 'rb') as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    final = f'{stem}-{digest[:8]}.pth'
    os.replace(tmp, final)
    return final


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('in_file', help='checkpoint from training')
    parser.add_argument('out_file', help='name of the published file')
    parser.add_argument(
        '--trust-checkpoint', action='store_true',
        help='in_file is trusted: if the safe loader refuses it, unpickle '
        'it with full pickle, which runs any code it contains')
    args = parser.parse_args(argv)
    if not os.path.isfile(args.in_file):
        sys.exit(f'error: checkpoint {args.in_file!r} does not exist')
    from dwnet_mm.safe_loading import UnsafeCheckpointError
    try:
        print(publish(args.in_file, args.out_file, args.trust_checkpoint))
    except (ValueError, UnsafeCheckpointError) as e:
        sys.exit(f'error: {e}')


if __name__ == '__main__':
    main()
