"""Train a dwnet-mm config (cls, det or seg) with mmengine's Runner.

    python tools/train.py configs/cls/dwnet-tiny_8xb128_in1k.py
    tools/dist_train.sh configs/det/cascade_dwnet_tiny_3x.py 8

Checkpoints (``--resume``, ``load_from``, Pretrained init_cfgs) are read with
dwnet_mm's safe loader (no code in them runs); ``--trust-checkpoint`` lets a
file it refuses be unpickled with full pickle.
"""
import argparse
import os
import sys

from mmengine.config import DictAction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a dwnet-mm model')
    parser.add_argument('config', help='config file')
    parser.add_argument('--work-dir', help='folder for logs and checkpoints')
    parser.add_argument(
        '--resume', nargs='?', const='auto', default=None,
        help='resume from the latest checkpoint in the work dir (no value) '
        'or from the given checkpoint')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by the actual total batch size')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    parser.add_argument(
        '--trust-checkpoint', action='store_true',
        help='the checkpoints this run reads (--resume, load_from, '
        'Pretrained init_cfgs) are trusted: a file the safe loader refuses '
        'is unpickled with full pickle, which runs any code it contains. '
        'Only for files from a source you trust')
    parser.add_argument('--launcher', default='none',
                        choices=['none', 'pytorch', 'slurm', 'mpi'])
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main(argv=None):
    args = parse_args(argv)
    import dwnet_mm  # noqa: F401  (registers DWNet)
    from dwnet_mm.runner_setup import (ConfigError, check_dataset_paths,
                                       exit_on_unknown_type,
                                       init_cpu_distributed, load_config,
                                       prepare_train_config)
    from dwnet_mm.safe_loading import UnsafeCheckpointError, checkpoint_loading
    from mmengine.runner import Runner
    try:
        cfg = load_config(args.config, args.cfg_options)
        prepare_train_config(cfg, args.work_dir, args.config, args.resume,
                             args.amp, args.auto_scale_lr, args.launcher)
        check_dataset_paths(cfg)
    except (ConfigError, ImportError) as e:
        sys.exit(f'error: {e}')
    init_cpu_distributed(cfg)
    # --resume, load_from and Pretrained init_cfgs read checkpoints safely;
    # mmengine's own resume files load without touching torch's
    # process-wide safe-globals list.
    with exit_on_unknown_type(), \
            checkpoint_loading(trust=args.trust_checkpoint):
        try:
            runner = Runner.from_cfg(cfg)
            runner.train()
        except UnsafeCheckpointError as e:
            sys.exit(f'error: {e}')


if __name__ == '__main__':
    main()
