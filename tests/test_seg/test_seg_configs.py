"""The ADE20K UPerNet configs: recipe terms, and the segmentors they build."""
import glob
import inspect
import os.path as osp

import pytest
import torch
from mmengine.registry import init_default_scope
from mmengine.utils import import_modules_from_strings
from seg_test_utils import (SEG_CONFIG_DIR, SEG_CONFIGS, SMALL_ARCH,
                            load_seg_config, shrink_model_cfg)

from dwnet_mm.models import DWNet


def _build_model(model_cfg, custom_imports):
    import_modules_from_strings(**custom_imports)
    init_default_scope('mmseg')
    from mmseg.registry import MODELS
    return MODELS.build(model_cfg)


def test_every_config_is_tested():
    found = {
        osp.basename(p)
        for p in glob.glob(osp.join(SEG_CONFIG_DIR, 'upernet_*.py'))
    }
    assert found == set(SEG_CONFIGS)


@pytest.mark.parametrize('config_name', sorted(SEG_CONFIGS))
def test_recipe(config_name):
    arch, conv_type = SEG_CONFIGS[config_name]
    widths = DWNet.arch_settings[arch]['channels']
    cfg = load_seg_config(config_name)
    assert cfg.default_scope == 'mmseg'
    assert cfg.custom_imports == dict(
        imports=['dwnet_mm'], allow_failed_imports=False)

    model = cfg.model
    assert model.type == 'EncoderDecoder'
    backbone = model.backbone
    assert backbone.type == 'DWNet'
    assert (backbone.arch, backbone.conv_type) == (arch, conv_type)
    assert backbone.out_type == 'featmap'
    assert tuple(backbone.out_indices) == (0, 1, 2, 3)
    assert backbone.norm_cfg.type == 'SyncBN'
    assert backbone.pad_to_window is True
    assert backbone.drop_path_rate == 0.3
    assert backbone.kernel_size == 7
    # Nothing of Swin's backbone settings survives the _delete_.
    assert 'num_heads' not in backbone and 'window_size' not in backbone
    assert backbone.init_cfg.type == 'Pretrained'
    assert backbone.init_cfg.checkpoint == cfg.checkpoint_file

    head = model.decode_head
    assert head.type == 'UPerHead'
    assert list(head.in_channels) == widths
    assert list(head.in_index) == [0, 1, 2, 3]
    assert head.channels == 512
    assert tuple(head.pool_scales) == (1, 2, 3, 6)
    assert head.num_classes == 150
    assert head.norm_cfg.type == 'SyncBN'
    assert head.loss_decode.loss_weight == 1.0
    aux = model.auxiliary_head
    assert aux.type == 'FCNHead'
    assert (aux.in_index, aux.in_channels) == (2, widths[2])
    assert aux.num_classes == 150
    assert aux.norm_cfg.type == 'SyncBN'
    assert aux.loss_decode.loss_weight == 0.4
    assert model.data_preprocessor.size == (512, 512)
    assert model.test_cfg.mode == 'whole'

    optim = cfg.optim_wrapper
    assert optim.type == 'OptimWrapper'
    assert optim.optimizer == dict(
        type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01,
        fused=True)
    # The authors' partition (tests/test_recipes checks it on the models).
    no_decay = dict(decay_mult=0.)
    assert optim.paramwise_cfg == dict(custom_keys={
        'backbone.patch_embed.norm': no_decay,
        'downsample.norm': no_decay,
        'backbone.norm': no_decay})
    # Their product is the authors' schedule (tests/test_recipes).
    warmup, poly = cfg.param_scheduler
    assert warmup == dict(type='LinearLR', start_factor=1e-6,
                          by_epoch=False, begin=0, end=1501)
    assert poly == dict(type='PolyLR', eta_min=0.0, power=1.0, begin=0,
                        end=160001, by_epoch=False)
    assert cfg.train_cfg.type == 'IterBasedTrainLoop'
    assert cfg.train_cfg.max_iters == 160000

    train = cfg.train_dataloader
    assert train.batch_size == 2
    assert train.dataset.type == 'ADE20KDataset'
    assert train.dataset.data_prefix == dict(
        img_path='images/training', seg_map_path='annotations/training')
    crop = [t for t in train.dataset.pipeline if t.type == 'RandomCrop']
    assert crop[0].crop_size == (512, 512)
    for key in ('val_dataloader', 'test_dataloader'):
        assert cfg[key].batch_size == 1
        assert cfg[key].dataset.data_prefix.img_path == 'images/validation'
    assert cfg.test_evaluator.type == 'IoUMetric'
    assert 'mIoU' in cfg.test_evaluator.iou_metrics


def test_ade20k_reduces_zero_label():
    """The dataset class default that the configs rely on."""
    from mmseg.datasets import ADE20KDataset
    cfg = load_seg_config('upernet_dwnet_tiny_160k_ade20k.py')
    default = inspect.signature(
        ADE20KDataset.__init__).parameters['reduce_zero_label'].default
    for key in ('train_dataloader', 'test_dataloader'):
        assert cfg[key].dataset.get('reduce_zero_label', default) is True
    assert len(ADE20KDataset.METAINFO['classes']) == 150


def test_tta_is_one_flag_away():
    cfg = load_seg_config('upernet_dwnet_tiny_160k_ade20k.py')
    assert cfg.tta_model.type == 'SegTTAModel'
    tta = [t for t in cfg.tta_pipeline if t.type == 'TestTimeAug']
    assert len(tta) == 1
    resizes, flips = tta[0].transforms[:2]
    # The authors' ratios of the (2048, 512) test scale, aspect kept.
    assert [tuple(t.scale) for t in resizes] == [
        (1024, 256), (1536, 384), (2048, 512), (2560, 640), (3072, 768),
        (3584, 896)
    ]
    assert all(t.keep_ratio for t in resizes)
    assert sorted(t.prob for t in flips) == [0., 1.]


@pytest.mark.parametrize('config_name', sorted(SEG_CONFIGS))
def test_builds_full_size_segmentor(config_name):
    arch, conv_type = SEG_CONFIGS[config_name]
    cfg = load_seg_config(config_name)
    model = _build_model(cfg.model, cfg.custom_imports)
    from mmseg.models import EncoderDecoder
    assert isinstance(model, EncoderDecoder)
    assert isinstance(model.backbone, DWNet)
    assert model.backbone.conv_type == conv_type
    assert model.backbone.out_channels == DWNet.arch_settings[arch][
        'channels']
    assert model.with_auxiliary_head
    assert isinstance(model.backbone.norm0, torch.nn.SyncBatchNorm)
    assert isinstance(model.decode_head.fpn_bottleneck.bn,
                      torch.nn.SyncBatchNorm)
    block = model.backbone.stages[0].blocks[0]
    assert block.pad_to_window
    assert model.decode_head.conv_seg.out_channels == 150
    assert model.auxiliary_head.conv_seg.out_channels == 150


def test_syncbn_segmentor_trains_in_one_cpu_process():
    """SyncBN layers fall back to plain BN outside torch.distributed (the
    Runner reverts them anyway; this checks the model as configured)."""
    from mmseg.structures import SegDataSample
    from mmengine.structures import PixelData
    cfg = load_seg_config('upernet_dwnet_tiny_160k_ade20k.py')
    model = _build_model(shrink_model_cfg(cfg.model, 'static'),
                         cfg.custom_imports)
    assert not torch.distributed.is_initialized()
    num_sync = sum(isinstance(m, torch.nn.SyncBatchNorm)
                   for m in model.modules())
    assert num_sync > 0
    assert model.backbone.out_channels == SMALL_ARCH['channels']

    torch.manual_seed(0)
    model.train()
    inputs = torch.randn(2, 3, 64, 64)
    samples = []
    for _ in range(2):
        sample = SegDataSample(metainfo=dict(img_shape=(64, 64),
                                             pad_shape=(64, 64)))
        label = torch.randint(0, 150, (1, 64, 64))
        label[:, :8] = 255  # ignored
        sample.gt_sem_seg = PixelData(data=label)
        samples.append(sample)
    losses = model.loss(inputs, samples)
    assert set(losses) >= {'decode.loss_ce', 'aux.loss_ce'}
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    weight = model.backbone.stages[0].blocks[0].mixer.pointwise_in.conv.weight
    assert weight.grad is not None and torch.isfinite(weight.grad).all()
    assert weight.grad.abs().sum() > 0
    # Training-mode SyncBN updated its running statistics like BN.
    assert model.backbone.norm0.num_batches_tracked.item() == 1
