"""Reading the demo's runs back: metrics, loss curves, prediction pictures
and the summary table.

Everything here reads what mmengine wrote: the metrics of
``tools/test.py`` (``<work_dir>/<timestamp>/<timestamp>.json``), the
training scalars (``<work_dir>/<timestamp>/vis_data/scalars.json``) and the
predictions dumped with ``tools/test.py --out``.
"""
import json
import os
import os.path as osp
import pickle
import re

import cv2
import numpy as np

_TIMESTAMP = re.compile(r'^\d{8}_\d{6}$')


def latest_run_dir(work_dir):
    """The newest ``<timestamp>`` folder mmengine made in ``work_dir``.

    Args:
        work_dir (str): A Runner's work_dir.

    Returns:
        str: The folder.

    Raises:
        FileNotFoundError: When the work dir holds no run.
    """
    runs = sorted(name for name in os.listdir(work_dir)
                  if _TIMESTAMP.match(name)
                  and osp.isdir(osp.join(work_dir, name)))
    if not runs:
        raise FileNotFoundError(f'no mmengine run (timestamped folder) in '
                                f'{work_dir}')
    return osp.join(work_dir, runs[-1])


def read_test_metrics(work_dir):
    """Metrics of the newest ``tools/test.py`` run in ``work_dir``.

    mmengine's LoggerHook writes them to ``<timestamp>/<timestamp>.json``.

    Returns:
        dict: Metric name -> value, as the evaluator returned them.
    """
    run = latest_run_dir(work_dir)
    path = osp.join(run, osp.basename(run) + '.json')
    with open(path, encoding='utf-8') as f:
        return json.load(f)


def read_train_scalars(work_dir):
    """Training log records (loss, lr, ...) of the newest run, one dict per
    logged iteration, in order."""
    path = osp.join(latest_run_dir(work_dir), 'vis_data', 'scalars.json')
    records = []
    with open(path, encoding='utf-8') as f:
        for line in f:
            line = line.strip()
            if line:
                records.append(json.loads(line))
    return [r for r in records if 'loss' in r]


def plot_training_curves(curves, out_file):
    """One panel per task: total loss (and its terms) against iteration.

    Args:
        curves (dict[str, list[dict]]): Task -> :func:`read_train_scalars`.
        out_file (str): PNG to write.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, len(curves), figsize=(4.5 * len(curves), 3.4), squeeze=False)
    for ax, (task, records) in zip(axes[0], curves.items()):
        steps = [r['step'] for r in records]
        terms = [k for k in records[0] if k.startswith('loss') or
                 re.match(r'^(s\d\.|aux\.|decode\.)?loss', k)] \
            if records else []
        for key in sorted(set(terms) - {'loss'}):
            ax.plot(steps, [r.get(key, np.nan) for r in records],
                    linewidth=0.8, alpha=0.7, label=key)
        ax.plot(steps, [r['loss'] for r in records], color='black',
                linewidth=1.8, label='loss (total)')
        ax.set_title(task)
        ax.set_xlabel('iteration')
        ax.set_yscale('log')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc='upper right')
    axes[0][0].set_ylabel('training loss')
    fig.tight_layout()
    fig.savefig(out_file, dpi=110)
    plt.close(fig)


# -------------------------------------------------------------- pictures
def load_predictions(path):
    """Predictions dumped by ``tools/test.py --out`` (list of dicts)."""
    with open(path, 'rb') as f:
        return pickle.load(f)


def _array(value):
    if hasattr(value, 'detach'):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _palette(n):
    colours = [(75, 25, 230), (75, 180, 60), (25, 225, 255), (200, 130, 0),
               (48, 130, 245), (180, 30, 145), (240, 240, 70)]
    return [colours[i % len(colours)] for i in range(n)]


def _read_rgb_upscaled(path, scale):
    image = cv2.imread(path)
    if image is None:
        raise FileNotFoundError(f'cannot read image {path}')
    return cv2.resize(image, None, fx=scale, fy=scale,
                      interpolation=cv2.INTER_NEAREST)


def _label(image, text, origin, colour):
    x, y = origin
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
    y = max(y, h + base)
    cv2.rectangle(image, (x, y - h - base), (x + w + 2, y), colour, -1)
    cv2.putText(image, text, (x + 1, y - base + 1), cv2.FONT_HERSHEY_SIMPLEX,
                0.45, (255, 255, 255), 1, cv2.LINE_AA)


def draw_cls_sample(sample, classes, scale=3):
    """The image with the predicted class and score; a green frame when
    right, red when wrong."""
    image = _read_rgb_upscaled(sample['img_path'], scale)
    pred = int(_array(sample['pred_label']).reshape(-1)[0])
    score = float(_array(sample['pred_score']).reshape(-1)[pred])
    gt = int(_array(sample['gt_label']).reshape(-1)[0])
    colour = (60, 170, 60) if pred == gt else (40, 40, 220)
    cv2.rectangle(image, (0, 0), (image.shape[1] - 1, image.shape[0] - 1),
                  colour, 4)
    _label(image, f'{classes[pred]} {score:.2f}', (4, 4), colour)
    if pred != gt:
        _label(image, f'true: {classes[gt]}', (4, image.shape[0] - 4),
               colour)
    return image


def draw_det_sample(sample, classes, score_thr=0.5, scale=3):
    """Predicted masks (filled), boxes and ``class score`` labels."""
    image = _read_rgb_upscaled(sample['img_path'], scale)
    pred = sample['pred_instances']
    scores = _array(pred['scores'])
    keep = scores >= score_thr
    boxes = _array(pred['bboxes'])[keep] * scale
    labels = _array(pred['labels'])[keep]
    masks = _array(pred['masks'])[keep] if 'masks' in pred else None
    colours = _palette(len(classes))
    overlay = image.copy()
    if masks is not None:
        for mask, label in zip(masks, labels):
            mask = cv2.resize(mask.astype(np.uint8), image.shape[1::-1],
                              interpolation=cv2.INTER_NEAREST) > 0
            overlay[mask] = colours[label]
    image = cv2.addWeighted(overlay, 0.45, image, 0.55, 0)
    for box, label, score in zip(boxes, labels, scores[keep]):
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        cv2.rectangle(image, (x0, y0), (x1, y1), colours[label], 2)
        _label(image, f'{classes[label]} {score:.2f}', (x0, y0),
               colours[label])
    return image


def draw_seg_sample(sample, palette, scale=3):
    """Image | ground truth | prediction (ignored pixels in black)."""
    image = _read_rgb_upscaled(sample['img_path'], scale)
    colours = np.array([p[::-1] for p in palette], np.uint8)  # RGB -> BGR

    def colourise(labels):
        labels = _array(labels).reshape(labels.shape[-2:])
        out = np.zeros(labels.shape + (3, ), np.uint8)
        valid = labels < len(colours)
        out[valid] = colours[labels[valid]]
        return cv2.resize(out, image.shape[1::-1],
                          interpolation=cv2.INTER_NEAREST)

    pred = colourise(sample['pred_sem_seg']['data'])
    panels = [image]
    if 'gt_sem_seg' in sample:
        panels.append(colourise(sample['gt_sem_seg']['data']))
    panels.append(cv2.addWeighted(image, 0.4, pred, 0.6, 0))
    gap = np.full((image.shape[0], 4, 3), 255, np.uint8)
    return np.concatenate(
        [p for panel in panels for p in (panel, gap)][:-1], axis=1)


def legend_strip(names, colours, width):
    """A white strip with a coloured box and the name of each class.

    Args:
        names (Sequence[str]): Class names.
        colours (Sequence[tuple]): BGR colour per class.
        width (int): Strip width in pixels.
    """
    strip = np.full((28, width, 3), 255, np.uint8)
    x = 8
    for name, colour in zip(names, colours):
        cv2.rectangle(strip, (x, 7), (x + 14, 21),
                      tuple(int(c) for c in colour), -1)
        cv2.putText(strip, name, (x + 19, 19), cv2.FONT_HERSHEY_SIMPLEX,
                    0.45, (0, 0, 0), 1, cv2.LINE_AA)
        x += 19 + cv2.getTextSize(name, cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                                  1)[0][0] + 16
    return strip


def seg_legend_colours(palette):
    """BGR colours of an mmseg (RGB) palette."""
    return [tuple(int(c) for c in p[::-1]) for p in palette]


def det_legend_colours(classes):
    """BGR colours :func:`draw_det_sample` uses for the classes."""
    return _palette(len(classes))


def save_grid(images, out_file, columns=4, legend=None):
    """Tile equally tall images into one picture (white gaps).

    Args:
        images (list[np.ndarray]): BGR images.
        out_file (str): PNG to write.
        columns (int): Images per row. Defaults to 4.
        legend (tuple, optional): (names, BGR colours) drawn below.
    """
    if not images:
        raise ValueError('no images to tile')
    h = max(i.shape[0] for i in images)
    w = max(i.shape[1] for i in images)
    rows = []
    for start in range(0, len(images), columns):
        row = []
        for image in images[start:start + columns]:
            cell = np.full((h + 6, w + 6, 3), 255, np.uint8)
            cell[3:3 + image.shape[0], 3:3 + image.shape[1]] = image
            row.append(cell)
        while len(row) < columns and start > 0:
            row.append(np.full((h + 6, w + 6, 3), 255, np.uint8))
        rows.append(np.concatenate(row, axis=1))
    if legend is not None:
        rows.append(legend_strip(*legend, width=rows[0].shape[1]))
    os.makedirs(osp.dirname(osp.abspath(out_file)), exist_ok=True)
    if not cv2.imwrite(out_file, np.concatenate(rows, axis=0)):
        raise OSError(f'could not write {out_file}')


# -------------------------------------------------------------- summary
def format_duration(seconds):
    """'3m 07s' style."""
    seconds = int(round(seconds))
    return f'{seconds // 60}m {seconds % 60:02d}s'


def summary_table(rows):
    """A markdown table of the demo's results.

    Args:
        rows (list[dict]): One per task with keys task, model, data,
            metrics (list of (name, key, value in %, target in %)),
            train_s, test_s.

    Returns:
        str: The table.
    """
    lines = [
        '| task | model | data (train / val images) | metric (held-out) '
        '| value (%) | target (%) | train | test |',
        '|---|---|---|---|---|---|---|---|',
    ]
    for row in rows:
        for i, (name, key, value, target) in enumerate(row['metrics']):
            first = i == 0
            value_text = '—' if value is None else f'{value:.1f}'
            lines.append('| ' + ' | '.join([
                row['task'] if first else '',
                row['model'] if first else '',
                row['data'] if first else '',
                f'{name} (`{key}`)',
                value_text,
                f'>= {target:g}' if target is not None else '',
                format_duration(row['train_s']) if first else '',
                format_duration(row['test_s']) if first else '',
            ]) + ' |')
    return '\n'.join(lines)
