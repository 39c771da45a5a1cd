"""Fold a trained DWNet model's BatchNorms once: write its deploy form.

    python tools/model_converters/reparameterize.py CONFIG CHECKPOINT OUT

As mmpretrain's RepVGG tool: CONFIG is the training config (e.g.
configs/cls/dwnet-tiny_8xb128_in1k.py), CHECKPOINT its trained weights;
OUT holds the weights of the same model with the backbone in its deploy
form (:meth:`DWNet.switch_to_deploy`), for the deploy configs
(``backbone=dict(deploy=True)``, e.g.
configs/cls/dwnet-tiny_deploy_8xb128_in1k.py). Those configs also take the
training checkpoint, folding it on every load; the file saves that work.
"""
import argparse
import os.path as osp
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Write the deploy form of a trained DWNet model')
    parser.add_argument('config', help='the training config')
    parser.add_argument('checkpoint', help='its trained weights')
    parser.add_argument('out', help='where the deploy-form weights go '
                        '(.pth, or .safetensors: weights only)')
    parser.add_argument('--trust-checkpoint', action='store_true',
                        help='unpickle CHECKPOINT with full pickle if the '
                        'safe reader refuses it (runs any code it holds)')
    return parser.parse_args(argv)


def reparameterize(config, checkpoint, out, trust=None):
    """Load ``checkpoint`` into ``config``'s model, fold its backbone and
    save the weights to ``out``.

    Returns:
        dict: The saved checkpoint (``meta`` and ``state_dict``).
    """
    from dwnet_mm.runner_setup import load_config
    from dwnet_mm.converters import save_checkpoint
    from dwnet_mm.runner_setup import build_model, load_weights
    from dwnet_mm.version import __version__
    if osp.abspath(checkpoint) == osp.abspath(out):
        raise ValueError('OUT must differ from CHECKPOINT')
    model = build_model(load_config(config))
    load_weights(model, checkpoint, trust=trust)
    model.backbone.switch_to_deploy()
    saved = dict(
        meta=dict(dwnet_mm_version=__version__, deploy=True,
                  config=osp.basename(config),
                  source=osp.basename(checkpoint)),
        state_dict=model.state_dict())
    save_checkpoint(saved, out)
    return saved


def main(argv=None):
    args = parse_args(argv)
    try:
        saved = reparameterize(args.config, args.checkpoint, args.out,
                               args.trust_checkpoint)
    except Exception as e:  # one clear line for the user, not a traceback
        sys.exit(f'reparameterize: {type(e).__name__}: {e}')
    print(f'wrote {args.out}: {len(saved["state_dict"])} tensors, backbone '
          'in the deploy form; load it with the deploy config '
          '(backbone=dict(deploy=True))')


if __name__ == '__main__':
    main()
