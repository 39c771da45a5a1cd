"""Export a dwnet-mm model to ONNX and check it in ONNX Runtime.

    python tools/export/pytorch2onnx.py CONFIG CHECKPOINT OUT.onnx \
        [--shape H W] [--opset 17] [--backbone-only] [--deploy]

What is exported, from one (N, 3, H, W) normalised image batch (the
model's data preprocessor is not part of the graph):

* mmpretrain classifiers (configs/cls): the class scores (``mode='tensor'``,
  before softmax);
* mmseg segmentors (configs/seg): the decode head's logits at 1/4 of the
  input size (``mode='tensor'``);
* mmdet detectors (configs/det): backbone and neck (the FPN maps); the RPN
  and RoI heads post-process their proposals with ops that mmdet 3 has no
  ONNX form of (use MMDeploy for them);
* ``--backbone-only``: the DWNet backbone's outputs.

Batch, height and width are dynamic. The tool runs ONNX Runtime on the file
and prints the largest relative error (max |ort - torch| / max |torch|)
against PyTorch. Needs ``pip install "dwnet-mm[export]"``.
"""
import argparse
import os.path as osp
import sys

from mmengine.config import DictAction

# Frameworks this tool exports, and their default input (H, W).
DEFAULT_SHAPES = {'mmpretrain': (224, 224), 'mmseg': (512, 512),
                  'mmdet': (800, 1216)}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Export a dwnet-mm model to ONNX and check it in ONNX '
        'Runtime')
    parser.add_argument('config', help='config file (configs/cls, seg, det)')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('out', help='ONNX file to write')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='example input size (the file takes any); '
                        'defaults: 224 224 (cls), 512 512 (seg), 800 1216 '
                        '(det)')
    parser.add_argument('--batch', type=int, default=1,
                        help='example batch size (the file takes any)')
    parser.add_argument('--opset', type=int, default=17,
                        help='ONNX opset, 11 to 17 (default 17)')
    parser.add_argument('--backbone-only', action='store_true',
                        help='export the DWNet backbone alone')
    parser.add_argument('--deploy', action='store_true',
                        help='export the DWNet backbone\'s deploy form '
                        '(BatchNorms folded); training checkpoints are '
                        'folded on loading')
    parser.add_argument('--tolerance', type=float, default=1e-4,
                        help='largest relative error accepted (exit status '
                        '1 above it; default 1e-4)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    return parser.parse_args(argv)


def read_config(path, cfg_options=None):
    """The merged config; any error reading it as a ConfigError."""
    from dwnet_mm.runner_setup import ConfigError, load_config
    try:
        return load_config(path, cfg_options)
    except ConfigError:
        raise
    except Exception as e:  # a syntax or merge error in the file
        raise ConfigError(f'cannot read config {path!r}: '
                          f'{type(e).__name__}: {_one_line(e)}') from e


def export_target(model, scope, backbone_only):
    """The module to export and a description of its outputs."""
    from dwnet_mm.export import TensorOutputs
    if backbone_only:
        return TensorOutputs(model.backbone), 'backbone feature maps'
    if scope == 'mmdet':
        return (TensorOutputs(model, lambda m, x: m.extract_feat(x)),
                'backbone + neck feature maps (the RPN/RoI heads are not '
                'exported)')
    tensor_mode = TensorOutputs(model, lambda m, x: m(x, mode='tensor'))
    if scope == 'mmseg':
        return tensor_mode, 'segmentation logits at 1/4 input size'
    return tensor_mode, 'class scores (before softmax)'


def prepare(args):
    """Check the arguments, build the model and load its weights.

    Returns:
        tuple[nn.Module, str]: The model (eval) and its framework scope.
    """
    from dwnet_mm.runner_setup import ConfigError
    from dwnet_mm.export import require_onnxruntime
    require_onnxruntime()
    if not 11 <= args.opset <= 17:
        raise ConfigError(f'--opset {args.opset}: the exporter used '
                          '(TorchScript) writes opsets 11 to 17')
    cfg = read_config(args.config, args.cfg_options)
    if not osp.isfile(args.checkpoint):
        raise ConfigError(f'checkpoint {args.checkpoint!r} does not exist')
    out_dir = osp.dirname(osp.abspath(args.out))
    if not osp.isdir(out_dir):
        raise ConfigError(f'output folder {out_dir!r} does not exist')
    from dwnet_mm.runner_setup import build_model, load_weights
    model = build_model(cfg, args.deploy)
    load_weights(model, args.checkpoint)
    return model, cfg.get('default_scope')


def main(argv=None):
    args = parse_args(argv)
    import torch

    import dwnet_mm  # noqa: F401
    from dwnet_mm.runner_setup import ConfigError
    from dwnet_mm.safe_loading import UnsafeCheckpointError
    from dwnet_mm.export import (MissingExportDependency, export_onnx,
                                 max_relative_error, onnxruntime_session,
                                 run_onnxruntime)
    try:
        model, scope = prepare(args)
    except (ConfigError, MissingExportDependency, ValueError,
            UnsafeCheckpointError, RuntimeError) as e:
        sys.exit(f'error: {_one_line(e)}')
    target, what = export_target(model, scope, args.backbone_only)
    height, width = args.shape or DEFAULT_SHAPES[scope]
    example = torch.randn(args.batch, model.backbone.in_channels, height,
                          width, generator=torch.Generator().manual_seed(0))
    try:
        reference = export_onnx(target, example, args.out, args.opset)
    except Exception as e:  # the exporter's errors are long and nested
        sys.exit(f'error: the export failed: {_one_line(e)}')
    outputs = run_onnxruntime(onnxruntime_session(args.out), example)
    error = max_relative_error(outputs, reference)
    shapes = ', '.join(str(tuple(o.shape)) for o in outputs)
    form = 'deploy' if args.deploy else 'training (eval)'
    print(f'exported {what}, {form} form, opset {args.opset}: {args.out} '
          f'({osp.getsize(args.out) / 2**20:.1f} MiB)')
    print(f'ONNX Runtime on {tuple(example.shape)}: outputs {shapes}')
    print(f'max relative error vs PyTorch: {error:.3g}')
    if error > args.tolerance:
        sys.exit(f'error: max relative error {error:.3g} is above '
                 f'--tolerance {args.tolerance:g}')


def _one_line(error):
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


if __name__ == '__main__':
    main()
