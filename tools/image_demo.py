"""Run a dwnet-mm model on one picture and draw its prediction.

    python tools/image_demo.py IMG CONFIG [CHECKPOINT] [--out-dir DIR]
        [--device cpu] [--score-thr 0.3]
    python tools/image_demo.py IMG dwnet-tiny_8xb128_in1k CHECKPOINT

One tool for the three tasks, through each framework's own inferencer,
picked by the config's ``default_scope`` (a classification model can be
named instead, as in mmpretrain's model index): mmpretrain's
``ImageClassificationInferencer`` (prints the top-5 classes), mmdet's
``DetInferencer`` (the detections above ``--score-thr``) and mmseg's
``MMSegInferencer`` (the share of the pixels of each class). The drawn
picture goes to ``--out-dir``; the tool prints its path.

The checkpoint is read with dwnet_mm's safe loader (no code in it runs);
``--trust-checkpoint`` lets a file it refuses be unpickled with full
pickle. Without a checkpoint the model keeps its random initial weights
(a smoke test: the prediction means nothing). Class names come from the
checkpoint's ``dataset_meta`` or, where it has none, from the config's test
dataset.
"""
import argparse
import os
import os.path as osp
import sys
import warnings

from mmengine.config import DictAction

#: default_scope of the config -> task.
TASKS = {'mmpretrain': 'cls', 'mmdet': 'det', 'mmseg': 'seg'}
TOP_K = 5
#: Detections listed one per line.
MAX_LISTED = 10
#: What mmdet and mmseg warn when they fall back to COCO / Cityscapes names.
FALLBACK_CLASS_WARNINGS = (
    'weights is None, use (COCO|cityscapes) classes',
    'dataset_meta or class names are not saved',
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Draw the prediction of a dwnet-mm model (cls, det or '
        'seg) on one image')
    parser.add_argument('img', help='image file')
    parser.add_argument(
        'config', help='config file, or the name of a classification model '
        "(mmpretrain.list_models('*dwnet*'))")
    parser.add_argument(
        'checkpoint', nargs='?',
        help='checkpoint file (default: none, random weights)')
    parser.add_argument(
        '--out-dir', default='results/image_demo',
        help='folder for the drawn picture (default: %(default)s)')
    parser.add_argument(
        '--device', help='e.g. cpu, cuda:0 (default: cuda:0 if there is a '
        'GPU, else cpu)')
    parser.add_argument(
        '--score-thr', type=float, default=0.3,
        help='detection: draw and count boxes scoring at least this '
        '(default: %(default)s)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    parser.add_argument(
        '--trust-checkpoint', action='store_true',
        help='the checkpoint is trusted: if the safe loader refuses it, '
        'unpickle it with full pickle, which runs any code it contains')
    return parser.parse_args(argv)


class DemoError(ValueError):
    """Input the demo cannot run with; the message names the fix."""


def check_image(path):
    """Fail early on a missing or unreadable image."""
    import mmcv
    if not osp.isfile(path):
        raise DemoError(f'image {path!r} does not exist; pass the path of '
                        'an image file (jpg, png, ...)')
    try:
        image = mmcv.imread(path)
    except Exception as e:  # noqa: BLE001 (any decoder error)
        raise DemoError(f'cannot read image {path!r} ({e}); pass a jpg, '
                        'png or other image file') from e
    if image is None:
        raise DemoError(f'cannot read image {path!r}: not an image file; '
                        'pass a jpg, png or other image file')


def check_checkpoint(path):
    if path and not osp.isfile(path) and '://' not in path:
        raise DemoError(
            f'checkpoint {path!r} does not exist; pass a checkpoint of this '
            'config (tools/train.py writes them to its work dir), or leave '
            'it out to run with random weights')


def task_of(cfg, config_path):
    scope = cfg.get('default_scope')
    if scope not in TASKS:
        raise DemoError(
            f'config {config_path!r} has default_scope={scope!r}; the demo '
            f'runs configs of {", ".join(sorted(TASKS))} (configs/cls, '
            'configs/det, configs/seg)')
    return TASKS[scope]


def checkpoint_dataset_meta(path, trust):
    """The ``dataset_meta`` saved in a checkpoint, or None."""
    if not path:
        return None
    from dwnet_mm.safe_loading import UnsafeCheckpointError, safe_load
    try:
        checkpoint = safe_load(path, map_location='cpu', trust=trust)
    except UnsafeCheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 (torch and pickle raise many)
        raise DemoError(f'cannot read checkpoint {path!r} ({type(e).__name__}'
                        f': {e}); pass a .pth file saved by torch.save, e.g. '
                        'by tools/train.py') from e
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    dataset_meta = meta.get('dataset_meta') if isinstance(meta, dict) else None
    return dict(dataset_meta) if dataset_meta else None


def config_dataset_meta(cfg):
    """Class names (and palette) of the config's test dataset.

    Built with ``lazy_init`` in the config's scope: only the metainfo is
    read, no annotation file.
    """
    from mmengine.registry import DATASETS, DefaultScope
    dataset = dict(cfg.test_dataloader.dataset, lazy_init=True)
    try:
        with DefaultScope.overwrite_default_scope(cfg.default_scope):
            return dict(DATASETS.build(dataset).metainfo)
    except Exception as e:  # noqa: BLE001 (a dataset of any kind)
        # The names only label the picture: go on without them.
        print(f'warning: no class names from the config\'s test dataset '
              f'({type(e).__name__}: {e})', file=sys.stderr)
        return {}


def build_inferencer(task, cfg, checkpoint, device):
    """The framework's inferencer; reads the checkpoint (if any)."""
    if task == 'cls':
        from mmpretrain.apis import ImageClassificationInferencer
        return ImageClassificationInferencer(
            cfg, pretrained=checkpoint or False, device=device)
    if task == 'det':
        from mmdet.apis import DetInferencer
        return DetInferencer(cfg, weights=checkpoint, device=device)
    from mmseg.apis import MMSegInferencer
    return MMSegInferencer(cfg, weights=checkpoint, device=device)


def dataset_meta(checkpoint_meta, cfg):
    """Class names and palette: the checkpoint's, else the config's test
    dataset's; a palette that does not fit the classes is replaced. None
    where neither names the classes."""
    meta = config_dataset_meta(cfg)
    meta = {key: meta.get(key) for key in ('classes', 'palette')}
    for key in meta:
        if (checkpoint_meta or {}).get(key) is not None:
            meta[key] = checkpoint_meta[key]
    classes, palette = meta['classes'], meta['palette']
    if not classes:
        return None  # the framework's own choice stands
    if isinstance(palette, (list, tuple)) and len(palette) >= len(classes):
        # mmseg's visualizer wants exactly one colour per class.
        meta['palette'] = [tuple(colour) for colour in palette[:len(classes)]]
    else:
        import numpy as np
        rng = np.random.default_rng(0)
        meta['palette'] = [tuple(int(v) for v in rng.integers(0, 256, 3))
                           for _ in classes]
    return meta


def set_dataset_meta(task, inferencer, meta):
    """Give the inferencer the class names and palette in ``meta``."""
    if task == 'cls':
        inferencer.classes = meta['classes']
        return
    model_meta = dict(inferencer.model.dataset_meta or {}, **meta)
    inferencer.model.dataset_meta = model_meta
    if task == 'det':  # mmseg's inferencer reads the model's on each call
        inferencer.visualizer.dataset_meta = model_meta


def run_inferencer(task, inferencer, img, out_dir, score_thr):
    """Predict and draw; returns ``(prediction, drawn picture path)``."""
    os.makedirs(out_dir, exist_ok=True)
    if task == 'cls':
        # One picture needs no progress bar; rich's, outside a terminal,
        # leaves the next printed line on its own.
        from mmpretrain.utils import progress
        progress.disable_progress_bar = True
        prediction = inferencer(img, show_dir=out_dir)[0]
        drawn = osp.join(out_dir, osp.splitext(osp.basename(img))[0] + '.png')
    elif task == 'det':
        prediction = inferencer(
            img, out_dir=out_dir, pred_score_thr=score_thr)['predictions'][0]
        drawn = osp.join(out_dir, 'vis', osp.basename(img))
    else:
        prediction = inferencer(img, out_dir=out_dir)['predictions']
        drawn = osp.join(out_dir, 'vis', osp.basename(img))
    return prediction, drawn


def class_name(classes, label):
    label = int(label)
    return str(classes[label]) if classes and label < len(classes) else \
        f'class {label}'


def summarize_cls(prediction, classes):
    """The top-5 classes and their scores, best first."""
    import numpy as np
    scores = np.asarray(prediction['pred_scores'])
    top = np.argsort(-scores, kind='stable')[:TOP_K]
    lines = [f'top-{len(top)} classes (of {len(scores)}):']
    lines += [f'  {class_name(classes, i)}: {scores[i]:.4f}' for i in top]
    return lines


def summarize_det(prediction, classes, score_thr):
    """How many detections score at least ``score_thr``, by class, and the
    best ones."""
    import numpy as np
    scores = np.asarray(prediction['scores'], dtype=float)
    keep = [i for i in np.argsort(-scores, kind='stable')
            if scores[i] >= score_thr]
    names = [class_name(classes, prediction['labels'][i]) for i in keep]
    by_class = ', '.join(f'{name} {names.count(name)}'
                         for name in sorted(set(names)))
    lines = [f'{len(keep)} detections with score >= {score_thr:g}'
             + (f' ({by_class})' if keep else '')]
    if keep:
        lines.append(f'best {min(len(keep), MAX_LISTED)}:')
    for name, i in list(zip(names, keep))[:MAX_LISTED]:
        box = ', '.join(f'{v:.1f}' for v in prediction['bboxes'][i])
        lines.append(f'  {name}: {scores[i]:.4f} [{box}]')
    return lines


def summarize_seg(prediction, classes):
    """The share of the pixels predicted as each class, largest first."""
    import numpy as np
    labels = np.asarray(prediction).astype(np.int64).ravel()
    counts = np.bincount(labels)
    order = [i for i in np.argsort(-counts, kind='stable') if counts[i]]
    lines = ['pixels by class:']
    lines += [f'  {class_name(classes, i)}: '
              f'{100.0 * counts[i] / labels.size:.2f}%' for i in order]
    return lines


def summarize(task, prediction, classes, score_thr):
    if task == 'cls':
        return summarize_cls(prediction, classes)
    if task == 'det':
        return summarize_det(prediction, classes, score_thr)
    return summarize_seg(prediction, classes)


def inferencer_classes(task, inferencer):
    if task == 'cls':
        return inferencer.classes
    return (inferencer.model.dataset_meta or {}).get('classes')


def resolve_config(config):
    """The config file of ``config``: a path, or a model name of the
    project's model index (``mmpretrain.list_models('*dwnet*')``)."""
    if osp.isfile(config) or config.endswith('.py') or os.sep in config:
        return config
    from dwnet_mm import register_model_index
    register_model_index()
    from mmpretrain.apis import ModelHub
    try:
        return ModelHub.get(config).config.filename
    except ValueError as e:
        raise DemoError(
            f'config {config!r} is neither a file nor a model name; pass a '
            'config file (configs/cls|det|seg/*.py) or a name that '
            "mmpretrain.list_models('*dwnet*') lists") from e


def prepare(args):
    """Check the input and read the config; returns ``(cfg, task)``."""
    from dwnet_mm.runner_setup import load_config
    from dwnet_mm.utils import require_framework
    check_image(args.img)
    config = resolve_config(args.config)
    cfg = load_config(config, args.cfg_options)
    task = task_of(cfg, args.config)
    # load_config sees the framework of the config's own lines only; a
    # demo config inherits it from its base.
    require_framework(cfg.default_scope, f'config {osp.basename(config)}')
    check_checkpoint(args.checkpoint)
    return cfg, task


def load_model(args, cfg, task):
    """Build the inferencer, its checkpoint read by the safe loader."""
    import torch
    from dwnet_mm.runner_setup import exit_on_unknown_type
    from dwnet_mm.safe_loading import UnsafeCheckpointError, checkpoint_loading
    device = args.device or ('cuda:0' if torch.cuda.is_available() else 'cpu')
    with exit_on_unknown_type(), \
            checkpoint_loading(trust=args.trust_checkpoint), \
            warnings.catch_warnings():
        # Their fallback to COCO / Cityscapes names: main() sets the names
        # of the checkpoint or the config instead.
        for message in FALLBACK_CLASS_WARNINGS:
            warnings.filterwarnings('ignore', message=message)
        try:
            return build_inferencer(task, cfg, args.checkpoint, device)
        except UnsafeCheckpointError as e:
            sys.exit(f'error: {e}')


def main(argv=None):
    args = parse_args(argv)
    import dwnet_mm  # noqa: F401
    from dwnet_mm.runner_setup import ConfigError
    from dwnet_mm.safe_loading import UnsafeCheckpointError
    try:
        cfg, task = prepare(args)
        # Read first: a refused file stops here, before any model is built.
        meta = checkpoint_dataset_meta(args.checkpoint, args.trust_checkpoint)
    except (ConfigError, DemoError, ImportError, UnsafeCheckpointError) as e:
        sys.exit(f'error: {e}')
    if not args.checkpoint:
        print('no checkpoint: the model keeps its random initial weights, '
              'its prediction means nothing', file=sys.stderr)
    inferencer = load_model(args, cfg, task)
    meta = dataset_meta(meta, cfg)
    if meta:
        set_dataset_meta(task, inferencer, meta)
    prediction, drawn = run_inferencer(task, inferencer, args.img,
                                       args.out_dir, args.score_thr)
    lines = summarize(task, prediction, inferencer_classes(task, inferencer),
                      args.score_thr)
    print(f'drawn prediction: {drawn}')
    print('\n'.join(lines))
    return prediction, drawn


if __name__ == '__main__':
    main()
