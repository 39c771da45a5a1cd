"""Helpers of the detection tests: shrunken configs, a COCO fixture, the
authors' mmdet 2.x checkpoint layout."""
import importlib.util
import json
import os
import os.path as osp

import numpy as np
import torch
from mmengine.config import Config
from PIL import Image, ImageDraw

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DET_CONFIG_DIR = osp.join(REPO, 'configs', 'det')
DET_CONFIGS = {
    # config file -> (arch, conv_type, drop_path_rate)
    'cascade_dwnet_tiny_3x.py': ('tiny', 'static', 0.2),
    'cascade_dwnet_base_3x.py': ('base', 'static', 0.3),
    'cascade_dynamic_dwnet_tiny_3x.py': ('tiny', 'dynamic', 0.2),
    'cascade_dynamic_dwnet_base_3x.py': ('base', 'dynamic', 0.3),
    'cascade_i_dynamic_dwnet_tiny_3x.py': ('tiny', 'i_dynamic', 0.2),
    'cascade_i_dynamic_dwnet_base_3x.py': ('base', 'i_dynamic', 0.3),
}
TINY_CONFIG_OF = {
    'static': 'cascade_dwnet_tiny_3x.py',
    'dynamic': 'cascade_dynamic_dwnet_tiny_3x.py',
    'i_dynamic': 'cascade_i_dynamic_dwnet_tiny_3x.py',
}

# A shrunken backbone and heads for CPU runs.
SMALL_ARCH = dict(channels=[16, 32, 64, 128], depths=[1, 1, 1, 1])
SMALL_I_DYNAMIC_GROUPS = 8
SMALL_FPN = 32  # FPN, RPN and RoI feature width (256 in the recipe)
SMALL_FC = 64  # box head fc width (1024 in the recipe)
# The recipe's scales divided by this: 128-pixel images, 60..100-pixel
# short sides.
SCALE_DIVISOR = 8
# Fewer RPN proposals than the recipe's 2000 / 1000 keep the CPU run short.
SMALL_PROPOSALS = 100
SMALL_RCNN_SAMPLES = 64

NUM_CLASSES = 80
FIXTURE_CLASSES = ('person', 'car', 'dog')


def _load_module(name, *path):
    spec = importlib.util.spec_from_file_location(name, osp.join(REPO, *path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_authors_layout_helpers():
    """``authors_shapes`` and ``make_state_dict`` of the model tests."""
    module = _load_module('_dwnet_authors_layout', 'tests', 'test_models',
                          'test_checkpoint_loading.py')
    return module.authors_shapes, module.make_state_dict


def load_det_converter():
    """The converter script as a module (tools/ is not a package)."""
    return _load_module('_dwnet_det_to_mmdet', 'tools', 'model_converters',
                        'dwnet_det_to_mmdet.py')


def load_det_config(config_name):
    return Config.fromfile(osp.join(DET_CONFIG_DIR, config_name))


# ----------------------------------------------------------------------------
# The authors' mmdet 2.x Cascade Mask R-CNN layout
# ----------------------------------------------------------------------------
def _bn(prefix, c):
    return {
        f'{prefix}.weight': (c, ),
        f'{prefix}.bias': (c, ),
        f'{prefix}.running_mean': (c, ),
        f'{prefix}.running_var': (c, ),
        f'{prefix}.num_batches_tracked': (),
    }


def mmdet2_cascade_head_shapes(in_channels, fpn=256, fc=1024,
                               num_classes=80, num_stages=3, num_anchors=3):
    """Names and shapes of the non-backbone parameters of an mmdet 2.x
    Cascade Mask R-CNN (FPN, RPNHead, Shared4Conv1FCBBoxHead with a norm,
    class-specific regression, FCNMaskHead), written out from mmdet 2.x's
    module attribute names."""
    shapes = {}
    for i, c in enumerate(in_channels):
        shapes[f'neck.lateral_convs.{i}.conv.weight'] = (fpn, c, 1, 1)
        shapes[f'neck.lateral_convs.{i}.conv.bias'] = (fpn, )
        shapes[f'neck.fpn_convs.{i}.conv.weight'] = (fpn, fpn, 3, 3)
        shapes[f'neck.fpn_convs.{i}.conv.bias'] = (fpn, )
    shapes.update({
        'rpn_head.rpn_conv.weight': (fpn, fpn, 3, 3),
        'rpn_head.rpn_conv.bias': (fpn, ),
        'rpn_head.rpn_cls.weight': (num_anchors, fpn, 1, 1),
        'rpn_head.rpn_cls.bias': (num_anchors, ),
        'rpn_head.rpn_reg.weight': (4 * num_anchors, fpn, 1, 1),
        'rpn_head.rpn_reg.bias': (4 * num_anchors, ),
    })
    for s in range(num_stages):
        box = f'roi_head.bbox_head.{s}'
        for j in range(4):
            # ConvModule with a norm: no conv bias.
            shapes[f'{box}.shared_convs.{j}.conv.weight'] = (fpn, fpn, 3, 3)
            shapes.update(_bn(f'{box}.shared_convs.{j}.bn', fpn))
        shapes[f'{box}.shared_fcs.0.weight'] = (fc, fpn * 7 * 7)
        shapes[f'{box}.shared_fcs.0.bias'] = (fc, )
        shapes[f'{box}.fc_cls.weight'] = (num_classes + 1, fc)
        shapes[f'{box}.fc_cls.bias'] = (num_classes + 1, )
        shapes[f'{box}.fc_reg.weight'] = (4 * num_classes, fc)
        shapes[f'{box}.fc_reg.bias'] = (4 * num_classes, )
        mask = f'roi_head.mask_head.{s}'
        for j in range(4):
            shapes[f'{mask}.convs.{j}.conv.weight'] = (fpn, fpn, 3, 3)
            shapes[f'{mask}.convs.{j}.conv.bias'] = (fpn, )
        shapes[f'{mask}.upsample.weight'] = (fpn, fpn, 2, 2)
        shapes[f'{mask}.upsample.bias'] = (fpn, )
        shapes[f'{mask}.conv_logits.weight'] = (num_classes, fpn, 1, 1)
        shapes[f'{mask}.conv_logits.bias'] = (num_classes, )
    return shapes


def make_authors_det_checkpoint(path, conv_type='static', seed=0):
    """An authors' mmdet 2.x checkpoint of the shrunken detector.

    Weights and biases are scaled down (5%, random signs) and norm scales
    kept near 1, so that the converted model runs to finite outputs.

    Returns:
        dict: The saved ``state_dict``.
    """
    authors_shapes, make_state_dict = load_authors_layout_helpers()
    shapes = {
        f'backbone.{k}': v
        for k, v in authors_shapes(
            SMALL_ARCH['channels'], SMALL_ARCH['depths'], conv_type,
            groups=SMALL_I_DYNAMIC_GROUPS, dense=True).items()
    }
    shapes.update(
        mmdet2_cascade_head_shapes(SMALL_ARCH['channels'], SMALL_FPN,
                                   SMALL_FC))
    state_dict = make_state_dict(shapes, seed)
    signs = torch.Generator().manual_seed(seed + 1)
    for key, value in state_dict.items():
        if key.endswith(('running_mean', 'running_var',
                         'num_batches_tracked')):
            continue
        if key.endswith('.weight') and value.dim() == 1:  # norm scales
            state_dict[key] = 1 + 0.1 * (value - value.mean())
        else:
            sign = torch.randint(0, 2, value.shape, generator=signs) * 2 - 1
            state_dict[key] = 0.05 * value * sign
    torch.save(
        dict(state_dict=state_dict,
             meta=dict(epoch=36, mmdet_version='2.11.0',
                       CLASSES=load_det_classes())), path)
    return state_dict


def load_det_classes():
    from mmdet.datasets import CocoDataset
    return list(CocoDataset.METAINFO['classes'])


# ----------------------------------------------------------------------------
# Shrunken configs
# ----------------------------------------------------------------------------
def _scaled(value):
    return max(1, round(value / SCALE_DIVISOR))


def shrink_scales(pipeline):
    """Divide every resize scale and crop size of a pipeline (also inside
    ``RandomChoice``) by :data:`SCALE_DIVISOR`."""
    for transform in pipeline:
        if transform['type'] == 'RandomChoice':
            for branch in transform['transforms']:
                shrink_scales(branch)
        if 'scales' in transform:
            transform['scales'] = [
                tuple(_scaled(v) for v in s) for s in transform['scales']
            ]
        if 'scale' in transform:
            transform['scale'] = tuple(_scaled(v) for v in transform['scale'])
        if 'crop_size' in transform:
            transform['crop_size'] = tuple(
                _scaled(v) for v in transform['crop_size'])
    return pipeline


def shrink_model_cfg(model_cfg, conv_type):
    """Small widths and depths: the recipe stays, the model shrinks."""
    backbone = model_cfg.backbone
    backbone.arch = dict(SMALL_ARCH)
    if conv_type == 'i_dynamic':
        backbone.i_dynamic_groups = SMALL_I_DYNAMIC_GROUPS
    model_cfg.neck.in_channels = list(SMALL_ARCH['channels'])
    model_cfg.neck.out_channels = SMALL_FPN
    model_cfg.rpn_head.in_channels = SMALL_FPN
    model_cfg.rpn_head.feat_channels = SMALL_FPN
    roi_head = model_cfg.roi_head
    roi_head.bbox_roi_extractor.out_channels = SMALL_FPN
    roi_head.mask_roi_extractor.out_channels = SMALL_FPN
    for head in roi_head.bbox_head:
        head.in_channels = SMALL_FPN
        head.conv_out_channels = SMALL_FPN
        head.fc_out_channels = SMALL_FC
    roi_head.mask_head.in_channels = SMALL_FPN
    roi_head.mask_head.conv_out_channels = SMALL_FPN

    model_cfg.train_cfg.rpn_proposal.nms_pre = SMALL_PROPOSALS
    model_cfg.train_cfg.rpn_proposal.max_per_img = SMALL_PROPOSALS
    for stage_cfg in model_cfg.train_cfg.rcnn:
        stage_cfg.sampler.num = SMALL_RCNN_SAMPLES
    model_cfg.test_cfg.rpn.nms_pre = SMALL_PROPOSALS
    model_cfg.test_cfg.rpn.max_per_img = SMALL_PROPOSALS
    # An untrained head scores every class near 1/81: keep its boxes so
    # that the evaluation has detections to match.
    model_cfg.test_cfg.rcnn.score_thr = 0.
    return model_cfg


def small_det_config(config_name, data_root, work_dir, max_epochs=1,
                     pretrained=None):
    """A real det config, shrunk for a CPU run on the COCO fixture.

    Keeps the recipe (optimizer, schedulers, pipelines, heads, losses,
    evaluator) and changes only sizes, paths, worker counts and, on CPU,
    mixed precision (CUDA-only) to fp32.
    """
    cfg = load_det_config(config_name)
    conv_type = DET_CONFIGS[config_name][1]
    shrink_model_cfg(cfg.model, conv_type)
    cfg.model.backbone.init_cfg = dict(
        type='Pretrained', checkpoint=pretrained) if pretrained else None
    cfg.work_dir = str(work_dir)
    cfg.randomness = dict(seed=0)
    if not torch.cuda.is_available():
        cfg.optim_wrapper.type = 'OptimWrapper'
        cfg.optim_wrapper.pop('loss_scale')

    shrink_scales(cfg.train_dataloader.dataset.pipeline)
    for key in ('val_dataloader', 'test_dataloader'):
        shrink_scales(cfg[key].dataset.pipeline)
    splits = dict(train_dataloader='train', val_dataloader='val',
                  test_dataloader='val')
    for key, split in splits.items():
        loader = cfg[key]
        loader.num_workers = 0
        loader.persistent_workers = False
        loader.dataset.data_root = str(data_root)
        loader.dataset.ann_file = f'annotations/instances_{split}.json'
        loader.dataset.data_prefix = dict(img=f'{split}/')
    for key in ('val_evaluator', 'test_evaluator'):
        cfg[key].ann_file = osp.join(str(data_root), 'annotations',
                                     'instances_val.json')

    cfg.train_cfg.max_epochs = max_epochs
    cfg.train_cfg.val_interval = max_epochs + 1
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.interval = max_epochs + 1
    cfg.default_hooks.checkpoint.save_last = False
    return cfg


# ----------------------------------------------------------------------------
# COCO fixture
# ----------------------------------------------------------------------------
def uncompressed_rle(mask):
    """COCO's uncompressed RLE of a binary mask: run lengths in column-major
    order, starting with a run of zeros."""
    flat = np.asarray(mask, dtype=np.uint8).flatten(order='F')
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0] + counts
    return dict(size=[int(mask.shape[0]), int(mask.shape[1])], counts=counts)


def compressed_rle(mask):
    from pycocotools import mask as mask_utils
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return dict(size=[int(s) for s in rle['size']],
                counts=rle['counts'].decode('ascii'))


def polygon_mask(polygons, height, width):
    """The mask of COCO polygons as COCO rasterises them."""
    from pycocotools import mask as mask_utils
    rle = mask_utils.merge(
        mask_utils.frPyObjects(polygons, height, width))
    return mask_utils.decode(rle)


def _box(mask):
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]


def _draw_image(rng, height, width):
    noise = rng.integers(60, 120, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(noise)


def write_coco_fixture(root, sizes=None, seed=0):
    """A COCO-layout folder: JPEGs in ``train/`` and ``val/``, and
    ``annotations/instances_{train,val}.json``.

    Every image holds a polygon object, an object with a compressed RLE
    mask and one with an uncompressed RLE mask; the first image of each
    split also holds a crowd region (``iscrowd=1``, uncompressed RLE). The
    category list is COCO's 80 classes (ids 1..80, in mmdet's order), the
    objects use :data:`FIXTURE_CLASSES`.

    Returns:
        dict: split -> the written annotation dict.
    """
    rng = np.random.default_rng(seed)
    classes = load_det_classes()
    cat_id = {name: i + 1 for i, name in enumerate(classes)}
    sizes = sizes or dict(
        train=[(96, 128), (128, 96), (96, 128), (128, 96)],
        val=[(96, 128), (128, 96), (112, 112)])
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    written = {}
    ann_id = 1
    for split, split_sizes in sizes.items():
        os.makedirs(osp.join(root, split), exist_ok=True)
        images, annotations = [], []
        for index, (h, w) in enumerate(split_sizes):
            image_id = index + 1
            name = f'{split}_{image_id:06d}.jpg'
            image = _draw_image(rng, h, w)
            draw = ImageDraw.Draw(image)
            objects = []

            # A polygon (a quadrilateral in the top-left part).
            x0, y0 = rng.integers(4, w // 4), rng.integers(4, h // 4)
            poly = [x0, y0, x0 + w // 3, y0 + 2, x0 + w // 3 - 3,
                    y0 + h // 3, x0 + 2, y0 + h // 3 - 2]
            draw.polygon(poly, fill=(230, 40, 40))
            polygons = [[float(v) for v in poly]]
            objects.append((FIXTURE_CLASSES[0], polygons,
                            polygon_mask(polygons, h, w), 0))

            # An ellipse, annotated with compressed RLE.
            ellipse = (w // 2, h // 2, w - 6, h - 6)
            draw.ellipse(ellipse, fill=(40, 220, 60))
            ellipse_mask = Image.new('L', (w, h))
            ImageDraw.Draw(ellipse_mask).ellipse(ellipse, fill=1)
            ellipse_mask = np.array(ellipse_mask)
            objects.append((FIXTURE_CLASSES[1], compressed_rle(ellipse_mask),
                            ellipse_mask, 0))

            # A rectangle, annotated with uncompressed RLE.
            rect = np.zeros((h, w), np.uint8)
            rect[h // 2:h - 4, 4:w // 3] = 1
            image.paste((40, 60, 230), box=(4, h // 2, w // 3, h - 4))
            objects.append((FIXTURE_CLASSES[2], uncompressed_rle(rect), rect,
                            0))

            if index == 0:  # a crowd of small blobs, top-right
                crowd = np.zeros((h, w), np.uint8)
                crowd[4:h // 3, w // 2 + 4:w - 4:3] = 1
                objects.append((FIXTURE_CLASSES[0], uncompressed_rle(crowd),
                                crowd, 1))

            image.save(osp.join(root, split, name), quality=95)
            images.append(
                dict(id=image_id, file_name=name, height=h, width=w))
            for cls, segmentation, mask, iscrowd in objects:
                annotations.append(
                    dict(
                        id=ann_id,
                        image_id=image_id,
                        category_id=cat_id[cls],
                        segmentation=segmentation,
                        area=float(mask.sum()),
                        bbox=[float(v) for v in _box(mask)],
                        iscrowd=iscrowd))
                ann_id += 1
        coco = dict(
            images=images,
            annotations=annotations,
            categories=[
                dict(id=cat_id[name], name=name) for name in classes
            ])
        with open(osp.join(root, 'annotations', f'instances_{split}.json'),
                  'w') as f:
            json.dump(coco, f)
        written[split] = coco
    return written
