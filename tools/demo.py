"""Train and evaluate DWNet on all three tasks, on generated data, on a CPU.

    make demo                      # = python tools/demo.py
    python tools/demo.py --tasks det --dist 2
    python tools/demo.py --quick   # one or two iterations per task (smoke)

1. writes a small synthetic dataset of coloured shapes in the ImageNet,
   COCO and ADE20K layouts to data/demo/ (reused when current);
2. for each task trains the demo config (configs/*/demo_*.py, shrunk
   versions of the real configs) with tools/train.py and evaluates the last
   checkpoint on the held-out split with tools/test.py;
3. prints a summary table (top-1, box/mask mAP, mIoU, time) and writes it
   with loss curves and pictures of predictions to results/demo/.
"""
import argparse
import json
import os
import os.path as osp
import re
import socket
import subprocess
import sys
import time

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

# metric: (name, evaluator key, factor to %, target in % or None)
TASKS = {
    'cls':
    dict(
        config='configs/cls/demo_dwnet-nano_shapes.py',
        model='DWNet + linear head (mmpretrain)',
        data_dir='imagenet',
        metrics=[('top-1', 'accuracy/top1', 1, 90)]),
    'det':
    dict(
        config='configs/det/demo_cascade_dwnet-nano_shapes.py',
        model='Cascade Mask R-CNN + DWNet (mmdet)',
        data_dir='coco',
        metrics=[('box mAP', 'coco/bbox_mAP', 100, 50),
                 ('mask mAP', 'coco/segm_mAP', 100, None)]),
    'seg':
    dict(
        config='configs/seg/demo_upernet_dwnet-nano_shapes.py',
        model='UPerNet + DWNet (mmseg)',
        data_dir='ade',
        metrics=[('mIoU', 'mIoU', 1, 70)]),
}
DEFAULT_DATA_ROOT = 'data/demo'

# mmengine's progress lines, shown while the rest goes to the log file.
_PROGRESS = re.compile(r' - mmengine - \w+ - (Epoch|Iter)\((train|val|test)\)'
                       r'|Saving checkpoint')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Train and evaluate DWNet on synthetic shapes '
        '(classification, detection, segmentation), on CPU or GPU.')
    parser.add_argument(
        '--tasks', nargs='+', choices=list(TASKS), default=list(TASKS),
        help='tasks to run (default: all)')
    parser.add_argument(
        '--quick', action='store_true',
        help='smoke test: a few images and 1-2 iterations per task '
        '(metrics are meaningless)')
    parser.add_argument(
        '--dist', type=int, default=1, metavar='N',
        help='train with N processes through tools/dist_train.sh '
        '(torchrun; gloo on CPU)')
    parser.add_argument('--data-root', help='where the generated data goes '
                        f'(default: {DEFAULT_DATA_ROOT}, or '
                        f'{DEFAULT_DATA_ROOT}/quick with --quick)')
    parser.add_argument('--out', help='results folder (default: '
                        'results/demo, or results/demo_quick with --quick)')
    parser.add_argument('--work-dir', help='checkpoints and mmengine logs '
                        '(default: work_dirs/demo[_quick])')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the generated data (default: 0)')
    parser.add_argument('--regenerate', action='store_true',
                        help='rewrite the data even when it is current')
    parser.add_argument('--verbose', action='store_true',
                        help='show all of mmengine\'s output, not only the '
                        'progress lines')
    args = parser.parse_args(argv)
    if args.dist < 1:
        parser.error('--dist must be >= 1')
    suffix = '_quick' if args.quick else ''
    args.data_root = args.data_root or (
        osp.join(DEFAULT_DATA_ROOT, 'quick') if args.quick else
        DEFAULT_DATA_ROOT)
    args.out = args.out or f'results/demo{suffix}'
    args.work_dir = args.work_dir or f'work_dirs/demo{suffix}'
    return args


def say(message):
    print(f'[demo] {message}', flush=True)


class StageFailed(RuntimeError):
    """A training or test subprocess exited with an error."""


def run_logged(command, log_file, verbose, env=None):
    """Run ``command``; all output to ``log_file``, progress to stdout."""
    os.makedirs(osp.dirname(log_file), exist_ok=True)
    env = dict(os.environ if env is None else env, PYTHONUNBUFFERED='1')
    tail = []
    with open(log_file, 'w', encoding='utf-8') as log, subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, errors='replace', env=env, cwd=REPO_ROOT) as proc:
        for line in proc.stdout:
            log.write(line)
            tail = (tail + [line])[-40:]
            if verbose or _PROGRESS.search(line):
                sys.stdout.write('    ' + line if not verbose else line)
                sys.stdout.flush()
        code = proc.wait()
    if code != 0:
        sys.stdout.write(''.join('    | ' + line for line in tail))
        raise StageFailed(f'exit status {code}; full log: {log_file}')


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def data_options(task, data_root):
    """--cfg-options pointing a demo config at another data folder."""
    if osp.normpath(data_root) == DEFAULT_DATA_ROOT:
        return []
    root = osp.join(data_root, TASKS[task]['data_dir'])
    options = [
        f'{split}_dataloader.dataset.data_root={root}'
        for split in ('train', 'val', 'test')
    ]
    if task == 'det':
        ann = osp.join(root, 'annotations', 'instances_val.json')
        options += [f'val_evaluator.ann_file={ann}',
                    f'test_evaluator.ann_file={ann}']
    return options


def quick_options(task):
    """--cfg-options for a smoke run: one epoch / two iterations."""
    if task == 'seg':
        return ['train_cfg.max_iters=2', 'default_hooks.checkpoint.interval=2',
                'default_hooks.logger.interval=1']
    return ['train_cfg.max_epochs=1', 'default_hooks.checkpoint.interval=1',
            'default_hooks.logger.interval=1']


def quick_spec():
    from dwnet_mm.demo import DemoDataSpec
    return DemoDataSpec(cls_train_per_class=4, cls_val_per_class=2,
                        det_train=4, det_val=2, seg_train=4, seg_val=2)


def run_task(task, args):
    """Train, test and read back one task. Returns its summary row."""
    spec = TASKS[task]
    config = spec['config']
    work_dir = osp.abspath(osp.join(args.work_dir, task))
    logs = osp.abspath(osp.join(args.out, 'logs'))
    # tools/test.py evaluates (and dumps the predictions) right after
    # training, so the validation at the end of training is skipped.
    options = ['train_cfg.val_begin=1000000000']
    options += data_options(task, args.data_root)
    if args.quick:
        options += quick_options(task)

    if args.dist > 1:
        command = ['bash', 'tools/dist_train.sh', config, str(args.dist)]
        env = dict(os.environ, PYTHON=sys.executable, PORT=str(free_port()))
    else:
        command = [sys.executable, 'tools/train.py', config]
        env = None
    command += ['--work-dir', work_dir, '--cfg-options', *options]
    say(f'{task}: training {config}'
        + (f' with {args.dist} processes' if args.dist > 1 else ''))
    start = time.monotonic()
    run_logged(command, osp.join(logs, f'{task}_train.log'), args.verbose,
               env)
    train_s = time.monotonic() - start

    test_options = data_options(task, args.data_root)
    if test_options:
        test_options.insert(0, '--cfg-options')
    with open(osp.join(work_dir, 'last_checkpoint'), encoding='utf-8') as f:
        checkpoint = f.read().strip()
    predictions = osp.join(work_dir, 'predictions.pkl')
    say(f'{task}: evaluating {osp.basename(checkpoint)} on the held-out '
        'split')
    start = time.monotonic()
    run_logged([
        sys.executable, 'tools/test.py', config, checkpoint, '--work-dir',
        osp.join(work_dir, 'test'), '--out', predictions, *test_options
    ], osp.join(logs, f'{task}_test.log'), args.verbose)
    test_s = time.monotonic() - start

    from dwnet_mm.demo.report import read_test_metrics, read_train_scalars
    metrics = read_test_metrics(osp.join(work_dir, 'test'))
    rows = []
    for name, key, factor, target in spec['metrics']:
        value = metrics.get(key)
        if value is None and not args.quick:
            raise StageFailed(f'the evaluator returned no {key!r} '
                              f'(got {sorted(metrics)})')
        rows.append((name, key, None if value is None else value * factor,
                     target))
    return dict(
        task=task,
        model=spec['model'],
        config=config,
        metrics=rows,
        raw_metrics=metrics,
        train_s=train_s,
        test_s=test_s,
        curve=read_train_scalars(work_dir),
        predictions=predictions)


def count_images(task, data_root):
    root = osp.join(data_root, TASKS[task]['data_dir'])
    folders = {
        'cls': ('train', 'val'),
        'det': ('train', 'val'),
        'seg': ('images/training', 'images/validation'),
    }[task]
    counts = []
    for folder in folders:
        n = 0
        for _, _, files in os.walk(osp.join(root, folder)):
            n += len(files)
        counts.append(n)
    return '{} / {}'.format(*counts)


def draw_pictures(results, out_dir):
    """One picture of predictions on held-out images per task."""
    import numpy as np
    from mmengine.config import Config

    from dwnet_mm.demo import report
    pictures = {}
    for row in results:
        task = row['task']
        cfg = Config.fromfile(row['config'])
        samples = report.load_predictions(row['predictions'])
        count = {'cls': 12, 'det': 8, 'seg': 4}[task]
        picks = np.unique(
            np.linspace(0, len(samples) - 1, min(count, len(samples)))
            .round().astype(int))
        legend = None
        if task == 'cls':
            images = [report.draw_cls_sample(samples[i], cfg.classes)
                      for i in picks]
            columns = 6
        elif task == 'det':
            images = [report.draw_det_sample(samples[i], cfg.classes)
                      for i in picks]
            columns = 4
            legend = (cfg.classes, report.det_legend_colours(cfg.classes))
        else:
            images = [report.draw_seg_sample(samples[i], cfg.palette)
                      for i in picks]
            columns = 2
            legend = (cfg.classes, report.seg_legend_colours(cfg.palette))
        path = osp.join(out_dir, f'{task}_predictions.png')
        report.save_grid(images, path, columns=columns, legend=legend)
        pictures[task] = path
    return pictures


def write_summary(results, pictures, curves_png, args, total_s, data_note):
    from dwnet_mm.demo.report import format_duration, summary_table
    table = summary_table(results)
    command = 'python tools/demo.py' + (
        ' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else '')
    lines = [
        '# dwnet-mm demo results', '',
        f'`{command}`, {time.strftime("%Y-%m-%d %H:%M")}, '
        f'{describe_machine()}; total wall time '
        f'{format_duration(total_s)}.', '',
        'Models trained from scratch on generated shapes (circle, square, '
        'star, triangle; ' + data_note + '), evaluated on the held-out '
        'split by the frameworks\' evaluators (mmpretrain Accuracy, mmdet '
        'CocoMetric, mmseg IoUMetric).', '', table, ''
    ]
    if args.quick:
        lines += ['`--quick` run: 1-2 iterations per task, the metrics '
                  'mean nothing.', '']
    lines += ['Training loss: `training_curves.png`', '']
    for task, path in pictures.items():
        lines.append(f'{task} predictions: `{osp.basename(path)}`')
    lines += ['', 'Configs: ' + ', '.join(f'`{r["config"]}`'
                                          for r in results), '']
    with open(osp.join(args.out, 'summary.md'), 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines))
    metrics = {
        r['task']: dict(config=r['config'], metrics=r['raw_metrics'],
                        train_s=round(r['train_s'], 1),
                        test_s=round(r['test_s'], 1))
        for r in results
    }
    with open(osp.join(args.out, 'metrics.json'), 'w',
              encoding='utf-8') as f:
        json.dump(metrics, f, indent=2)
    return table


def describe_machine():
    import torch
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    cores = len(os.sched_getaffinity(0)) if hasattr(
        os, 'sched_getaffinity') else os.cpu_count()
    return f'CPU, {cores} cores, {torch.get_num_threads()} torch threads'


def main(argv=None):
    args = parse_args(argv)
    os.chdir(REPO_ROOT)
    start = time.monotonic()
    from dwnet_mm.demo import DemoDataSpec, generate_demo_data
    from dwnet_mm.demo.report import format_duration, plot_training_curves

    spec = quick_spec() if args.quick else DemoDataSpec()
    say(f'data: {args.data_root} (seed {args.seed})')
    manifest, written = generate_demo_data(
        args.data_root, seed=args.seed, spec=spec, force=args.regenerate,
        log=lambda message: say(f'data: writing {message}'))
    if not written:
        say(f'data: reusing {args.data_root} (generator version '
            f'{manifest["generator_version"]}, seed {args.seed})')

    os.makedirs(args.out, exist_ok=True)
    results = []
    for task in args.tasks:
        try:
            row = run_task(task, args)
        except (StageFailed, OSError) as e:
            say(f'{task}: FAILED: {e}')
            return 1
        row['data'] = count_images(task, args.data_root)
        results.append(row)
        shown = ', '.join(
            f'{name} {"—" if value is None else f"{value:.1f}"}'
            for name, _, value, _ in row['metrics'])
        say(f'{task}: {shown} (train {format_duration(row["train_s"])}, '
            f'test {format_duration(row["test_s"])})')

    say('drawing loss curves and predictions')
    curves_png = osp.join(args.out, 'training_curves.png')
    plot_training_curves({r['task']: r['curve'] for r in results}, curves_png)
    pictures = draw_pictures(results, args.out)
    total_s = time.monotonic() - start
    table = write_summary(
        results, pictures, curves_png, args, total_s,
        f'{spec.cls_size} px classification, {spec.det_size} px detection, '
        f'{spec.seg_size} px segmentation images')

    print()
    print(table)
    print()
    say(f'total wall time {format_duration(total_s)} on '
        f'{describe_machine()}')
    missed = [f'{r["task"]} {name}' for r in results
              for name, _, value, target in r['metrics']
              if target is not None and value is not None and value < target]
    if missed and not args.quick:
        say('below the expected level: ' + ', '.join(missed))
    say(f'results: {osp.join(args.out, "summary.md")}, {curves_png}, '
        + ', '.join(pictures.values()))
    return 0


if __name__ == '__main__':
    sys.exit(main())
