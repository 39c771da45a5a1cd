"""The demo's synthetic data: deterministic, and valid in each real format
(read back with pycocotools, PIL, and the frameworks' own datasets)."""
import hashlib
import json
import os
import os.path as osp

import numpy as np
import pytest
from PIL import Image

from dwnet_mm.demo import (GENERATOR_VERSION, SEG_CLASSES, SHAPES,
                           DemoDataSpec, generate_demo_data, read_manifest,
                           shape_polygon)

TINY = DemoDataSpec(
    cls_train_per_class=3, cls_val_per_class=2, det_train=5, det_val=3,
    seg_train=5, seg_val=3)


def digest_tree(root):
    """relative path -> sha256 of every file under ``root``."""
    digests = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = osp.join(folder, name)
            with open(path, 'rb') as f:
                digests[osp.relpath(path, root)] = hashlib.sha256(
                    f.read()).hexdigest()
    return digests


@pytest.fixture(scope='module')
def demo_data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('demo_data'))
    manifest, written = generate_demo_data(root, seed=0, spec=TINY)
    assert written
    return root, manifest


def test_same_seed_gives_identical_files(demo_data, tmp_path):
    root, _ = demo_data
    again = str(tmp_path / 'again')
    generate_demo_data(again, seed=0, spec=TINY)
    first, second = digest_tree(root), digest_tree(again)
    # manifest + ImageNet (3 + 2) x 4 + COCO 5 + 3 images, 2 json + ADE
    # (5 + 3) x (jpg, png)
    assert len(first) == 1 + 20 + 10 + 16
    assert first == second


def test_file_counts(demo_data):
    root, _ = demo_data
    for split, n in (('train', 3), ('val', 2)):
        for shape in SHAPES:
            files = os.listdir(osp.join(root, 'imagenet', split, shape))
            assert sorted(files) == [f'{shape}_{i:05d}.JPEG'
                                     for i in range(n)]
    assert len(os.listdir(osp.join(root, 'coco', 'train'))) == 5
    assert len(os.listdir(osp.join(root, 'coco', 'val'))) == 3
    for split, n in (('training', 5), ('validation', 3)):
        assert len(os.listdir(osp.join(root, 'ade', 'images', split))) == n
        assert len(os.listdir(osp.join(root, 'ade', 'annotations',
                                       split))) == n


def test_other_seed_gives_other_images(demo_data, tmp_path):
    root, _ = demo_data
    other = str(tmp_path / 'other')
    generate_demo_data(other, seed=1, spec=TINY)
    first, second = digest_tree(root), digest_tree(other)
    assert first.keys() == second.keys()
    images = [k for k in first if k.endswith(('.JPEG', '.jpg', '.png'))]
    assert all(first[k] != second[k] for k in images)


def test_reused_when_current_and_rewritten_when_not(tmp_path):
    root = str(tmp_path / 'data')
    spec = DemoDataSpec(
        cls_train_per_class=1, cls_val_per_class=1, det_train=1, det_val=1,
        seg_train=1, seg_val=1)
    manifest, written = generate_demo_data(root, seed=3, spec=spec)
    assert written
    assert read_manifest(root) == manifest
    assert manifest['generator_version'] == GENERATOR_VERSION
    assert manifest['seed'] == 3
    stamp = os.stat(osp.join(root, 'coco', 'train', '00000.jpg')).st_mtime_ns

    _, written = generate_demo_data(root, seed=3, spec=spec)
    assert not written
    assert os.stat(osp.join(root, 'coco', 'train',
                            '00000.jpg')).st_mtime_ns == stamp

    # Other sizes: the stale images must go, not only new ones be added.
    bigger = DemoDataSpec(
        cls_train_per_class=1, cls_val_per_class=1, det_train=2, det_val=1,
        seg_train=1, seg_val=1)
    _, written = generate_demo_data(root, seed=3, spec=bigger)
    assert written
    assert len(os.listdir(osp.join(root, 'coco', 'train'))) == 2
    smaller = DemoDataSpec(
        cls_train_per_class=1, cls_val_per_class=1, det_train=1, det_val=1,
        seg_train=1, seg_val=1)
    generate_demo_data(root, seed=3, spec=smaller)
    assert os.listdir(osp.join(root, 'coco', 'train')) == ['00000.jpg']

    # An interrupted run (no manifest) is redone.
    os.remove(osp.join(root, 'manifest.json'))
    _, written = generate_demo_data(root, seed=3, spec=smaller)
    assert written


def test_images_do_not_depend_on_the_number_of_images(demo_data, tmp_path):
    root, _ = demo_data
    fewer = str(tmp_path / 'fewer')
    generate_demo_data(
        fewer, seed=0,
        spec=DemoDataSpec(cls_train_per_class=1, cls_val_per_class=1,
                          det_train=2, det_val=1, seg_train=2, seg_val=1))
    for rel in ('coco/train/00001.jpg', 'ade/annotations/training/00001.png'):
        with open(osp.join(root, rel), 'rb') as a, \
                open(osp.join(fewer, rel), 'rb') as b:
            assert a.read() == b.read()


def test_imagenet_folders(demo_data):
    root, _ = demo_data
    path = osp.join(root, 'imagenet', 'val', 'star', 'star_00001.JPEG')
    with Image.open(path) as image:
        assert image.format == 'JPEG'
        assert image.mode == 'RGB'
        assert image.size == (TINY.cls_size, TINY.cls_size)
    # Class folders are read in sorted order; SHAPES is that order.
    assert sorted(os.listdir(osp.join(root, 'imagenet', 'train'))) == \
        list(SHAPES)


def test_coco_json_loads_and_masks_decode(demo_data):
    pycocotools = pytest.importorskip('pycocotools.coco')
    root, _ = demo_data
    for split, n_images in (('train', 5), ('val', 3)):
        ann_file = osp.join(root, 'coco', 'annotations',
                            f'instances_{split}.json')
        coco = pycocotools.COCO(ann_file)
        assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == \
            list(SHAPES)
        assert len(coco.getImgIds()) == n_images
        assert len(coco.getAnnIds()) >= n_images  # >= 1 object per image
        for ann in coco.loadAnns(coco.getAnnIds()):
            info = coco.loadImgs(ann['image_id'])[0]
            assert osp.isfile(
                osp.join(root, 'coco', split, info['file_name']))
            mask = coco.annToMask(ann)
            assert mask.shape == (info['height'], info['width'])
            # The rasterised polygon matches the stated area and box.
            assert abs(mask.sum() - ann['area']) < 0.1 * ann['area'] + 20
            ys, xs = np.nonzero(mask)
            x, y, w, h = ann['bbox']
            assert x >= 0 and y >= 0
            assert x + w <= info['width'] and y + h <= info['height']
            assert abs(xs.min() - x) <= 1.5 and abs(ys.min() - y) <= 1.5
            assert abs(xs.max() + 1 - (x + w)) <= 1.5
            assert abs(ys.max() + 1 - (y + h)) <= 1.5
            assert ann['iscrowd'] == 0


def test_coco_objects_do_not_overlap(demo_data):
    pycocotools = pytest.importorskip('pycocotools.coco')
    root, _ = demo_data
    coco = pycocotools.COCO(
        osp.join(root, 'coco', 'annotations', 'instances_train.json'))
    for image_id in coco.getImgIds():
        masks = [coco.annToMask(a)
                 for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id))]
        assert max(np.sum(masks, axis=0).reshape(-1)) == 1


def test_ade_label_maps(demo_data):
    root, _ = demo_data
    seen = set()
    for split in ('training', 'validation'):
        folder = osp.join(root, 'ade', 'annotations', split)
        for name in sorted(os.listdir(folder)):
            with Image.open(osp.join(folder, name)) as png:
                assert png.mode == 'L'
                labels = np.asarray(png)
            assert labels.shape == (TINY.seg_size, TINY.seg_size)
            values = set(np.unique(labels).tolist())
            # 0 unlabelled outline, 1 background, 2.. shapes.
            assert values <= set(range(len(SEG_CLASSES) + 1))
            assert {0, 1} <= values
            assert values & set(range(2, len(SEG_CLASSES) + 1))
            seen |= values
            image = osp.join(root, 'ade', 'images', split,
                             name.replace('.png', '.jpg'))
            with Image.open(image) as jpg:
                assert jpg.size == (TINY.seg_size, TINY.seg_size)
    assert len(seen) >= 4


def test_unlabelled_band_lies_on_outlines(demo_data):
    root, _ = demo_data
    labels = np.asarray(
        Image.open(osp.join(root, 'ade', 'annotations', 'training',
                            '00000.png')))
    ignored = labels == 0
    # A thin band: far fewer ignored pixels than object pixels, each
    # close to the background ...
    assert 0 < ignored.sum() < (labels >= 2).sum()
    padded = np.pad(labels, 2, constant_values=1)
    for y, x in zip(*np.nonzero(ignored)):
        assert (padded[y:y + 5, x:x + 5] == 1).any()
    # ... that separates every object from the background.
    obj, background = labels >= 2, labels == 1
    assert not (obj[1:] & background[:-1]).any()
    assert not (obj[:-1] & background[1:]).any()
    assert not (obj[:, 1:] & background[:, :-1]).any()
    assert not (obj[:, :-1] & background[:, 1:]).any()


@pytest.mark.parametrize('shape', SHAPES)
def test_shape_polygons(shape):
    polygon = shape_polygon(shape, (10, 20), 5, 0.3)
    assert polygon.ndim == 2 and polygon.shape[1] == 2
    radii = np.hypot(polygon[:, 0] - 10, polygon[:, 1] - 20)
    assert radii.max() == pytest.approx(5)


def test_unknown_shape():
    with pytest.raises(ValueError, match='unknown shape'):
        shape_polygon('hexagon', (0, 0), 1, 0)


def test_manifest_is_json(demo_data):
    root, manifest = demo_data
    with open(osp.join(root, 'manifest.json')) as f:
        assert json.load(f) == manifest
    assert manifest['shapes'] == list(SHAPES)


def test_objects_have_their_class_hue(demo_data):
    """Each class is drawn in its own sector of the colour circle."""
    import cv2
    pycocotools = pytest.importorskip('pycocotools.coco')
    root, _ = demo_data
    coco = pycocotools.COCO(
        osp.join(root, 'coco', 'annotations', 'instances_train.json'))
    checked = 0
    for ann in coco.loadAnns(coco.getAnnIds()):
        info = coco.loadImgs(ann['image_id'])[0]
        image = cv2.imread(osp.join(root, 'coco', 'train', info['file_name']))
        xy = np.array(ann['segmentation'][0]).reshape(-1, 2).mean(axis=0)
        x, y = np.round(xy).astype(int)
        patch = image[y - 1:y + 2, x - 1:x + 2].reshape(-1, 1, 3)
        hsv = cv2.cvtColor(patch.mean(axis=0, keepdims=True).astype(
            np.uint8), cv2.COLOR_BGR2HSV)[0, 0]
        hue = hsv[0] / 180
        label = ann['category_id'] - 1
        lo, hi = label / len(SHAPES), (label + 1) / len(SHAPES)
        # Sector +- a margin for the shading and the JPEG.
        distance = min(abs((hue - (lo + hi) / 2 + 0.5) % 1 - 0.5), 0.5)
        assert distance <= (hi - lo) / 2 + 0.03, (ann, hue)
        assert hsv[1] > 80  # saturated, unlike the background
        checked += 1
    assert checked >= 5
