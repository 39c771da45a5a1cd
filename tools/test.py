"""Test a dwnet-mm checkpoint (cls, det or seg) with mmengine's Runner.

    python tools/test.py CONFIG CHECKPOINT [--tta] [--deploy] [--out x.pkl]
    tools/dist_test.sh CONFIG CHECKPOINT 8

Checkpoints are read with dwnet_mm's safe loader (no code in them runs);
``--trust-checkpoint`` lets a file it refuses be unpickled with full pickle.
"""
import argparse
import os
import sys

from mmengine.config import DictAction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test a dwnet-mm model')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='folder for logs and metrics')
    parser.add_argument('--out', help='dump the raw predictions to a pickle')
    parser.add_argument('--show-dir',
                        help='draw predictions into this folder (relative '
                        'to the work dir\'s timestamped folder)')
    parser.add_argument('--tta', action='store_true',
                        help='test-time augmentation (the config\'s '
                        'tta_model / tta_pipeline)')
    parser.add_argument('--deploy', action='store_true',
                        help='run the DWNet backbone in its deploy form '
                        '(BatchNorms folded, NHWC blocks; faster inference, '
                        'same outputs within 1e-4); training checkpoints are '
                        'folded on loading')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    parser.add_argument(
        '--trust-checkpoint', action='store_true',
        help='the checkpoints this run reads are trusted: a file the safe '
        'loader refuses (it pickles more than tensors, plain containers and '
        'known harmless classes) is unpickled with full pickle, which runs '
        'any code it contains. Only for files from a source you trust')
    parser.add_argument('--launcher', default='none',
                        choices=['none', 'pytorch', 'slurm', 'mpi'])
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def enable_drawing(cfg, show_dir):
    """Switch on the framework's visualization hook."""
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        raise ValueError('--show-dir needs a visualization hook in '
                         'default_hooks')
    if cfg.default_scope == 'mmpretrain':
        hook.update(enable=True, out_dir=show_dir)
    else:  # mmdet, mmseg
        hook.update(draw=True, test_out_dir=show_dir)
        hook.setdefault('interval', 1)


def main(argv=None):
    args = parse_args(argv)
    import dwnet_mm  # noqa: F401
    from dwnet_mm.runner_setup import (ConfigError, check_dataset_paths,
                                       exit_on_unknown_type,
                                       init_cpu_distributed, load_config,
                                       prepare_test_config)
    from dwnet_mm.safe_loading import UnsafeCheckpointError, checkpoint_loading
    from mmengine.evaluator import DumpResults
    from mmengine.runner import Runner
    try:
        cfg = load_config(args.config, args.cfg_options)
        prepare_test_config(cfg, args.checkpoint, args.work_dir, args.config,
                            args.tta, args.launcher, args.deploy)
        check_dataset_paths(cfg, keys=('test_dataloader', ))
        if args.show_dir:
            enable_drawing(cfg, args.show_dir)
    except (ConfigError, ImportError, ValueError) as e:
        sys.exit(f'error: {e}')
    init_cpu_distributed(cfg)
    # The checkpoint (and any Pretrained init_cfg) is read safely.
    with exit_on_unknown_type(), \
            checkpoint_loading(trust=args.trust_checkpoint):
        try:
            runner = Runner.from_cfg(cfg)
            if args.out:
                runner.test_evaluator.metrics.append(
                    DumpResults(out_file_path=args.out))
            runner.test()
        except UnsafeCheckpointError as e:
            sys.exit(f'error: {e}')


if __name__ == '__main__':
    main()
