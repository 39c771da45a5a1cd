"""A small synthetic dataset in the on-disk formats of ImageNet, COCO and
ADE20K, for the demo (``tools/demo.py``) and tests.

Every image shows coloured geometric shapes (:data:`SHAPES`) on a textured
background. Each class has its own outline and its own range of hues (a
sector of the colour circle); saturation, brightness, size, rotation,
position and the background are drawn independently of the class. The
colour cue keeps the tasks learnable from scratch in a few minutes of CPU.

Each image is drawn from its own random stream, seeded by
``(seed, task, split, index)``: the same seed gives byte-identical files, and
an image does not change when the number of images does.

Layout written under ``root`` (``data/demo`` by default)::

    imagenet/{train,val}/<shape>/<shape>_00000.JPEG   mmpretrain ImageNet
    coco/{train,val}/00000.jpg                         mmdet CocoDataset
    coco/annotations/instances_{train,val}.json        (polygon masks)
    ade/images/{training,validation}/00000.jpg         mmseg ADE20K layout
    ade/annotations/{training,validation}/00000.png
    manifest.json                                      version, seed, sizes

ADE20K label semantics (``reduce_zero_label=True``, as mmseg's
``ADE20KDataset``): 0 is "unlabelled" and ignored (here a one-pixel band
around every object, where the JPEG blurs the edge), 1 is the background,
2.. are the shapes; training and evaluation see ``label - 1`` with 0 ->
255 (ignored).
"""
import json
import os
import os.path as osp
import shutil
from dataclasses import asdict, dataclass

import cv2
import numpy as np

#: Object classes, in label order: category ids 1.. in COCO, png labels 2..
#: in ADE20K, and sorted, as ImageNet's class folders are read.
SHAPES = ('circle', 'square', 'star', 'triangle')
#: ADE20K-style class names (after reduce_zero_label): background first.
SEG_CLASSES = ('background', ) + SHAPES
#: Bump when the drawing changes, so that stale data is regenerated.
GENERATOR_VERSION = 2
MANIFEST = 'manifest.json'

_TASK_IDS = {'cls': 1, 'det': 2, 'seg': 3}
_SPLIT_IDS = {'train': 1, 'val': 2}
_ADE_SPLITS = {'train': 'training', 'val': 'validation'}


@dataclass(frozen=True)
class DemoDataSpec:
    """Sizes of the demo dataset.

    Args:
        cls_size (int): Side of the classification images. Defaults to 64.
        cls_train_per_class (int): Training images per class.
        cls_val_per_class (int): Validation images per class.
        det_size (int): Side of the detection images. Defaults to 128.
        det_train (int): Training images for detection.
        det_val (int): Validation images for detection.
        det_max_objects (int): Objects per detection image, at most.
        seg_size (int): Side of the segmentation images. Defaults to 128.
        seg_train (int): Training images for segmentation.
        seg_val (int): Validation images for segmentation.
        seg_max_objects (int): Objects per segmentation image, at most.
    """
    cls_size: int = 64
    cls_train_per_class: int = 250
    cls_val_per_class: int = 50
    det_size: int = 128
    det_train: int = 400
    det_val: int = 80
    det_max_objects: int = 3
    seg_size: int = 128
    seg_train: int = 400
    seg_val: int = 80
    seg_max_objects: int = 4


# ---------------------------------------------------------------- drawing
def shape_polygon(shape, center, radius, angle):
    """Outline of a shape as an (N, 2) float array of (x, y) vertices.

    Args:
        shape (str): One of :data:`SHAPES`.
        center (tuple[float, float]): (x, y) of the centre.
        radius (float): Circumradius in pixels.
        angle (float): Rotation in radians.

    Returns:
        np.ndarray: The vertices, counter-clockwise in image coordinates.
    """
    if shape == 'circle':
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        r = np.full_like(t, radius)
    elif shape == 'square':
        t = np.arange(4) * np.pi / 2 + np.pi / 4
        r = np.full_like(t, radius)
    elif shape == 'triangle':
        t = np.arange(3) * 2 * np.pi / 3 - np.pi / 2
        r = np.full_like(t, radius)
    elif shape == 'star':
        t = np.arange(10) * np.pi / 5 - np.pi / 2
        r = np.where(np.arange(10) % 2 == 0, radius, 0.45 * radius)
    else:
        raise ValueError(f'unknown shape {shape!r}; choose one of {SHAPES}')
    t = t + angle
    return np.stack([center[0] + r * np.cos(t), center[1] + r * np.sin(t)],
                    axis=1)


def _hsv_to_bgr(h, s, v):
    hsv = np.uint8([[[round(h * 179), round(s * 255), round(v * 255)]]])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def textured_background(rng, size):
    """A muted background: colour gradient, blobs and fine grain.

    Args:
        rng (np.random.Generator): Random stream.
        size (int): Image side.

    Returns:
        np.ndarray: (size, size, 3) float32 BGR image in [0, 255].
    """
    c0 = _hsv_to_bgr(rng.random(), rng.uniform(0, 0.35), rng.uniform(.3, .8))
    c1 = _hsv_to_bgr(rng.random(), rng.uniform(0, 0.35), rng.uniform(.3, .8))
    theta = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    ramp = (np.cos(theta) * xx + np.sin(theta) * yy)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    image = c0 * (1 - ramp[..., None]) + c1 * ramp[..., None]
    # Mostly brightness blobs, a little colour, and grain.
    blobs = rng.normal(0, 1, (6, 6, 4)).astype(np.float32)
    blobs = cv2.resize(blobs, (size, size), interpolation=cv2.INTER_CUBIC)
    image += 14 * blobs[..., :1] + 5 * blobs[..., 1:]
    image += rng.normal(0, 4, image.shape).astype(np.float32)
    return np.clip(image, 0, 255)


def class_hue(label, rng):
    """A hue in the class's own sector of the colour circle.

    The sectors (a fifth of the circle each, with gaps) make colour a cue
    for the class next to the outline, so that small models learn the
    task within minutes on a CPU.
    """
    return (label + rng.uniform(0.1, 0.9)) / len(SHAPES)


def draw_object(image, polygon, hue, rng):
    """Fill a polygon with a saturated, slightly shaded colour (in place).

    Args:
        image (np.ndarray): (H, W, 3) float32 BGR canvas.
        polygon (np.ndarray): (N, 2) vertices.
        hue (float): Hue in [0, 1).
        rng (np.random.Generator): Random stream.
    """
    h, w = image.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    points = np.round(polygon * 16).astype(np.int32)
    cv2.fillPoly(mask, [points], 255, lineType=cv2.LINE_AA, shift=4)
    alpha = mask.astype(np.float32)[..., None] / 255
    colour = _hsv_to_bgr(hue, rng.uniform(.55, 1), rng.uniform(.5, 1))
    shade = rng.normal(0, 1, (3, 3, 1)).astype(np.float32)
    shade = cv2.resize(shade, (w, h), interpolation=cv2.INTER_LINEAR)
    fill = np.clip(colour + 20 * shade[..., None], 0, 255)
    image *= 1 - alpha
    image += alpha * fill


def sample_scene(rng, size, max_objects, min_radius, max_radius):
    """Non-overlapping objects that lie fully inside the image.

    Args:
        rng (np.random.Generator): Random stream.
        size (int): Image side.
        max_objects (int): At most this many objects (at least one).
        min_radius (float): Smallest circumradius.
        max_radius (float): Largest circumradius.

    Returns:
        list[tuple[int, np.ndarray]]: (class index, polygon) per object.
    """
    wanted = int(rng.integers(1, max_objects + 1))
    objects, discs = [], []
    for _ in range(50 * wanted):
        if len(objects) == wanted:
            break
        radius = rng.uniform(min_radius, max_radius)
        center = rng.uniform(radius + 1, size - radius - 1, 2)
        if any(np.hypot(*(center - c)) < radius + r + 3 for c, r in discs):
            continue
        label = int(rng.integers(len(SHAPES)))
        polygon = shape_polygon(SHAPES[label], center, radius,
                                rng.uniform(0, 2 * np.pi))
        objects.append((label, polygon))
        discs.append((center, radius))
    return objects


def _image_rng(seed, task, split, index):
    return np.random.default_rng(
        [seed, _TASK_IDS[task], _SPLIT_IDS[split], index])


def _write_jpeg(path, image):
    image = np.round(image).astype(np.uint8)
    if not cv2.imwrite(path, image, [cv2.IMWRITE_JPEG_QUALITY, 92]):
        raise OSError(f'could not write {path}')


# ---------------------------------------------------------------- formats
def write_imagenet_split(root, split, seed, size, per_class):
    """ImageNet class folders: ``root/<split>/<shape>/<shape>_NNNNN.JPEG``.

    One centred-ish shape per image, 25-45% of the image side in radius.
    """
    index = 0
    for label, shape in enumerate(SHAPES):
        folder = osp.join(root, split, shape)
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
            rng = _image_rng(seed, 'cls', split, index)
            index += 1
            image = textured_background(rng, size)
            radius = rng.uniform(0.25, 0.45) * size
            center = size / 2 + rng.uniform(-0.5, 0.5, 2) * (size / 2 - radius)
            draw_object(
                image,
                shape_polygon(shape, center, radius,
                              rng.uniform(0, 2 * np.pi)),
                class_hue(label, rng), rng)
            _write_jpeg(osp.join(folder, f'{shape}_{i:05d}.JPEG'), image)


def write_coco_split(root, split, seed, size, count, max_objects):
    """COCO instances: ``root/<split>/NNNNN.jpg`` and
    ``root/annotations/instances_<split>.json`` with polygon masks.

    Returns:
        dict: The annotation file's content.
    """
    os.makedirs(osp.join(root, split), exist_ok=True)
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    images, annotations = [], []
    for i in range(count):
        rng = _image_rng(seed, 'det', split, i)
        image = textured_background(rng, size)
        scene = sample_scene(rng, size, max_objects, 0.12 * size,
                             0.28 * size)
        file_name = f'{i:05d}.jpg'
        images.append(
            dict(id=i + 1, file_name=file_name, width=size, height=size))
        for label, polygon in scene:
            draw_object(image, polygon, class_hue(label, rng), rng)
            x0, y0 = polygon.min(axis=0)
            x1, y1 = polygon.max(axis=0)
            xs, ys = polygon[:, 0], polygon[:, 1]
            area = 0.5 * abs(
                float(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))))
            annotations.append(
                dict(
                    id=len(annotations) + 1,
                    image_id=i + 1,
                    category_id=label + 1,
                    bbox=[round(float(v), 2) for v in (x0, y0, x1 - x0,
                                                       y1 - y0)],
                    area=round(area, 2),
                    segmentation=[[round(float(v), 2)
                                   for v in polygon.reshape(-1)]],
                    iscrowd=0))
        _write_jpeg(osp.join(root, split, file_name), image)
    content = dict(
        info=dict(description='dwnet-mm synthetic shapes (demo)'),
        images=images,
        annotations=annotations,
        categories=[
            dict(id=k + 1, name=name, supercategory='shape')
            for k, name in enumerate(SHAPES)
        ])
    with open(osp.join(root, 'annotations', f'instances_{split}.json'),
              'w', encoding='utf-8') as f:
        json.dump(content, f)
    return content


def write_ade_split(root, split, seed, size, count, max_objects):
    """ADE20K layout: ``root/images/<training|validation>/NNNNN.jpg`` and
    ``root/annotations/<training|validation>/NNNNN.png`` (uint8 labels:
    0 unlabelled, 1 background, 2.. shapes)."""
    folder = _ADE_SPLITS[split]
    os.makedirs(osp.join(root, 'images', folder), exist_ok=True)
    os.makedirs(osp.join(root, 'annotations', folder), exist_ok=True)
    kernel = np.ones((3, 3), np.uint8)
    for i in range(count):
        rng = _image_rng(seed, 'seg', split, i)
        image = textured_background(rng, size)
        labels = np.ones((size, size), np.uint8)
        outline = np.zeros((size, size), np.uint8)
        for label, polygon in sample_scene(rng, size, max_objects,
                                           0.14 * size, 0.32 * size):
            draw_object(image, polygon, class_hue(label, rng), rng)
            mask = np.zeros((size, size), np.uint8)
            cv2.fillPoly(mask, [np.round(polygon * 16).astype(np.int32)], 1,
                         shift=4)
            labels[mask > 0] = label + 2
            outline |= cv2.dilate(mask, kernel) - mask
        labels[outline > 0] = 0
        _write_jpeg(osp.join(root, 'images', folder, f'{i:05d}.jpg'), image)
        if not cv2.imwrite(
                osp.join(root, 'annotations', folder, f'{i:05d}.png'),
                labels):
            raise OSError(f'could not write the label map {i:05d}.png')


# ---------------------------------------------------------------- entry
def expected_manifest(seed, spec):
    """What ``manifest.json`` holds for a complete dataset."""
    return dict(
        generator_version=GENERATOR_VERSION,
        seed=seed,
        spec=asdict(spec),
        shapes=list(SHAPES))


def read_manifest(root):
    """The manifest of ``root``, or None when missing or unreadable."""
    try:
        with open(osp.join(root, MANIFEST), encoding='utf-8') as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def generate_demo_data(root='data/demo', seed=0, spec=None, force=False,
                       log=None):
    """Write the demo dataset under ``root`` unless it is already there.

    A dataset is reused when ``root/manifest.json`` names the same generator
    version, seed and sizes. Otherwise the three task folders (``imagenet``,
    ``coco``, ``ade``; nothing else under ``root``) are rewritten and the
    manifest is written last, so an interrupted run is redone next time.

    Args:
        root (str): Output folder. Defaults to 'data/demo'.
        seed (int): Random seed. Defaults to 0.
        spec (DemoDataSpec, optional): Sizes. Defaults to
            ``DemoDataSpec()``.
        force (bool): Regenerate even when current. Defaults to False.
        log (callable, optional): Called with progress messages.

    Returns:
        tuple[dict, bool]: The manifest and whether files were written.
    """
    spec = spec or DemoDataSpec()
    log = log or (lambda message: None)
    manifest = expected_manifest(seed, spec)
    if not force and read_manifest(root) == manifest:
        return manifest, False
    os.makedirs(root, exist_ok=True)
    if osp.exists(osp.join(root, MANIFEST)):
        os.remove(osp.join(root, MANIFEST))
    for task_dir in ('imagenet', 'coco', 'ade'):
        if osp.isdir(osp.join(root, task_dir)):
            shutil.rmtree(osp.join(root, task_dir))
    for split, per_class in (('train', spec.cls_train_per_class),
                             ('val', spec.cls_val_per_class)):
        log(f'cls {split}: {per_class * len(SHAPES)} images')
        write_imagenet_split(
            osp.join(root, 'imagenet'), split, seed, spec.cls_size, per_class)
    for split, count in (('train', spec.det_train), ('val', spec.det_val)):
        log(f'det {split}: {count} images')
        write_coco_split(
            osp.join(root, 'coco'), split, seed, spec.det_size, count,
            spec.det_max_objects)
    for split, count in (('train', spec.seg_train), ('val', spec.seg_val)):
        log(f'seg {split}: {count} images')
        write_ade_split(
            osp.join(root, 'ade'), split, seed, spec.seg_size, count,
            spec.seg_max_objects)
    with open(osp.join(root, MANIFEST), 'w', encoding='utf-8') as f:
        json.dump(manifest, f, indent=2)
    return manifest, True
