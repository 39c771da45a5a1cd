"""Params and FLOPs of the COCO detectors, counted the way the paper did.

The paper's detection FLOPs (at 1280x800) come from mmdet 2.x's
``tools/analysis_tools/get_flops.py``, which ran the detector's
``forward_dummy``. For Cascade Mask R-CNN that is: backbone + FPN, the RPN
head's convolutions (no proposal decoding or NMS), then the three cascade
box heads, each on the same 1000 dummy proposals (``torch.randn(1000, 4)``,
not refined between stages), and the three mask heads, each on the first
100 of them. mmdet 3.x dropped ``forward_dummy``; its 'tensor' mode runs the
RPN's NMS and sends a data-dependent number of proposals through the heads,
so :class:`CascadeDummyForward` re-creates the 2.x counting with mmdet 3.x
modules.

FLOPs here are multiply-accumulates (MACs) from mmengine's
:class:`~mmengine.analysis.FlopAnalyzer` with dwnet_mm's op handles
(:mod:`.flop_handles`), as in :mod:`.complexity`.
"""
import copy
import os.path as osp

import torch
import torch.nn as nn
from mmengine.analysis import parameter_count

from .flop_handles import flop_analyzer
from .frameworks import require_framework

# Config name (configs/det/<name>.py) -> published params (M), FLOPs (G) of
# the detector at 1280x800 (REFERENCE.md section 3).
PAPER_DET_MODELS = {
    'cascade_dwnet_tiny_3x': (82, 730),
    'cascade_dynamic_dwnet_tiny_3x': (108, 730),
    'cascade_i_dynamic_dwnet_tiny_3x': (84, 741),
    'cascade_dwnet_base_3x': (132, 924),
    'cascade_dynamic_dwnet_base_3x': (219, 924),
    'cascade_i_dynamic_dwnet_base_3x': (137, 948),
}
# The parts of a two-stage detector reported separately.
DETECTOR_PARTS = ('backbone', 'neck', 'rpn_head', 'roi_head')


class CascadeDummyForward(nn.Module):
    """mmdet 2.x ``forward_dummy`` of a (cascade) two-stage detector.

    Runs, on an image batch of one: ``extract_feat`` (backbone + neck), the
    RPN head's forward, and every stage's box head on ``num_proposals``
    fixed boxes and mask head on the first ``num_mask_rois`` of them. The
    boxes do not change the count; they are drawn inside the image with a
    fixed seed so that the run is deterministic.

    Args:
        detector (nn.Module): An mmdet 3.x ``TwoStageDetector`` with a
            ``CascadeRoIHead`` (or a ``StandardRoIHead``).
        num_proposals (int): Boxes fed to the box heads. Defaults to 1000.
        num_mask_rois (int): Boxes fed to the mask heads. Defaults to 100.
    """

    def __init__(self, detector, num_proposals=1000, num_mask_rois=100):
        super().__init__()
        for part in DETECTOR_PARTS:
            if getattr(detector, part, None) is None:
                raise ValueError(
                    f'{type(detector).__name__} has no {part}: '
                    'CascadeDummyForward counts two-stage detectors '
                    '(backbone, neck, rpn_head, roi_head)')
        # The parts as direct children: FlopAnalyzer reports them by name.
        self.backbone = detector.backbone
        self.neck = detector.neck
        self.rpn_head = detector.rpn_head
        self.roi_head = detector.roi_head
        self.num_proposals = num_proposals
        self.num_mask_rois = num_mask_rois

    def dummy_rois(self, height, width, device):
        """(num_proposals, 5) RoIs of image 0 inside a height x width
        image."""
        gen = torch.Generator().manual_seed(0)
        xy = torch.rand(self.num_proposals, 2, generator=gen)
        wh = torch.rand(self.num_proposals, 2, generator=gen)
        scale = torch.tensor([width, height], dtype=torch.float32)
        x1y1 = xy * scale * 0.75
        x2y2 = x1y1 + (0.05 + 0.2 * wh) * scale
        batch_index = torch.zeros(self.num_proposals, 1)
        return torch.cat([batch_index, x1y1, x2y2], dim=1).to(device)

    def forward(self, img):
        feats = self.neck(self.backbone(img))
        outs = (self.rpn_head(feats), )
        rois = self.dummy_rois(img.shape[2], img.shape[3], img.device)
        roi_head = self.roi_head
        num_stages = getattr(roi_head, 'num_stages', None)
        stages = range(num_stages) if num_stages else [None]

        def run(method, stage, stage_rois):
            args = (feats, stage_rois) if stage is None else (stage, feats,
                                                              stage_rois)
            return getattr(roi_head, method)(*args)

        for stage in stages:
            result = run('_bbox_forward', stage, rois)
            outs += (result['cls_score'], result['bbox_pred'])
        if getattr(roi_head, 'with_mask', False):
            mask_rois = rois[:self.num_mask_rois]
            for stage in stages:
                outs += (run('_mask_forward', stage, mask_rois)['mask_preds'],
                         )
        return outs


def build_detector(config, cfg_options=None):
    """Build the detector of an mmdet config, without loading weights.

    The backbone's ``Pretrained`` init is dropped (no checkpoint is needed
    to count) and SyncBN becomes BN, so that this runs on CPU.

    Args:
        config (str | Config): Config file or loaded config.
        cfg_options (dict, optional): Overrides in ``--cfg-options`` form.

    Returns:
        nn.Module: The detector, in eval mode.
    """
    require_framework('mmdet', 'counting detector FLOPs')
    from mmengine.config import Config
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope
    from mmengine.utils import import_modules_from_strings

    from mmdet.registry import MODELS

    cfg = Config.fromfile(config) if isinstance(config, str) else \
        copy.deepcopy(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    cfg.model.backbone.init_cfg = None
    detector = MODELS.build(cfg.model)
    return revert_sync_batchnorm(detector).eval()


def count_detector_complexity(detector, input_size=(1280, 800),
                              num_proposals=1000, num_mask_rois=100):
    """Params and MACs of a two-stage detector, as mmdet 2.x counted them.

    Args:
        detector (nn.Module): A two-stage mmdet 3.x detector.
        input_size (tuple[int, int]): (H, W) of the input image; mmdet 2.x's
            ``get_flops.py --shape 1280 800`` meant H=1280, W=800 (the count
            is the same for 800x1280). Defaults to (1280, 800).
        num_proposals (int): Proposals through the box heads.
            Defaults to 1000.
        num_mask_rois (int): Proposals through the mask heads.
            Defaults to 100.

    Returns:
        dict: ``params`` and ``flops`` (MACs) of the whole model,
        ``params_by_part`` / ``flops_by_part`` for ``backbone``, ``neck``,
        ``rpn_head`` and ``roi_head``, and ``flops_by_operator`` (e.g.
        ``conv``, ``linear``, ``batch_norm``).
    """
    model = CascadeDummyForward(detector, num_proposals,
                                num_mask_rois).eval()
    height, width = input_size
    with torch.no_grad():
        analyzer = flop_analyzer(model, torch.randn(1, 3, height, width))
        analyzer.tracer_warnings('none')
        flops_by_module = analyzer.by_module()
        flops_by_operator = analyzer.by_operator()
        total = analyzer.total()
    params_by_module = parameter_count(detector)
    return dict(
        params=params_by_module[''],
        flops=total,
        params_by_part={p: params_by_module[p]
                        for p in DETECTOR_PARTS},
        flops_by_part={p: flops_by_module[p]
                       for p in DETECTOR_PARTS},
        flops_by_operator=dict(flops_by_operator))


def detector_complexity(config, input_size=(1280, 800), cfg_options=None):
    """Build a detector from ``config`` and count its params and MACs.

    Args:
        config (str | Config): mmdet config of a two-stage detector.
        input_size (tuple[int, int]): (H, W). Defaults to (1280, 800).
        cfg_options (dict, optional): Config overrides.

    Returns:
        dict: See :func:`count_detector_complexity`.
    """
    return count_detector_complexity(
        build_detector(config, cfg_options), input_size)


def detection_table(config_dir, names=None, input_size=(1280, 800)):
    """Our and the paper's params and FLOPs of the COCO detectors.

    Args:
        config_dir (str): Folder of the configs (``configs/det``).
        names (list[str], optional): Config names (keys of
            :data:`PAPER_DET_MODELS`). Defaults to all.
        input_size (tuple[int, int]): (H, W). Defaults to (1280, 800).

    Returns:
        list[tuple]: (name, result of :func:`count_detector_complexity`,
        paper params M, paper GFLOPs) per config.
    """
    rows = []
    for name in names or PAPER_DET_MODELS:
        if name not in PAPER_DET_MODELS:
            raise ValueError(f'unknown detector {name!r}; one of '
                             f'{sorted(PAPER_DET_MODELS)}')
        path = osp.join(config_dir, name + '.py')
        result = detector_complexity(path, input_size)
        rows.append((name, result) + PAPER_DET_MODELS[name])
    return rows
