"""Real train -> val runs of the classification configs (mmengine Runner).

The configs are used as shipped, with only the sizes shrunk: a small
backbone, few classes, 64 px images, two epochs of two iterations.
"""
import json
import math
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

from cls_data import (CLS_CONFIG_DIR, WNIDS, authors_checkpoint_helpers,
                      converter_tool)

SMALL_ARCH = dict(channels=[16, 32, 64, 128], depths=[1, 1, 1, 1])
NUM_CLASSES = 5  # >= 5 for top-5 accuracy; the data uses classes 0..2
IMG = 64


class RecordHook(Hook):
    """Keeps the initial weights, the training losses and the val metrics."""
    priority = 'VERY_LOW'

    def __init__(self):
        self.initial_state = None
        self.losses = []
        self.val_metrics = []

    def before_train(self, runner):
        # On the CPU, to compare with the checkpoint on any device.
        self.initial_state = {
            k: v.detach().cpu().clone()
            for k, v in runner.model.state_dict().items()
        }

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        self.losses.append(outputs['loss'].item())

    def before_val_epoch(self, runner):
        self.val_outputs = []

    def after_val_iter(self, runner, batch_idx, data_batch=None,
                       outputs=None):
        self.val_outputs += outputs

    def after_val_epoch(self, runner, metrics=None):
        self.val_metrics.append(dict(metrics))
        # Top-1 / top-5 recomputed from this epoch's predictions.
        scores = torch.stack([o.pred_score.cpu() for o in self.val_outputs])
        labels = torch.cat([o.gt_label.cpu() for o in self.val_outputs])
        ranks = (scores > scores.gather(1, labels[:, None])).sum(1)
        self.val_metrics[-1]['by_hand'] = {
            k: 100. * (ranks < k).float().mean().item()
            for k in (1, 5)
        }


def _shrink_pipeline(pipeline):
    for transform in pipeline:
        if transform.type in ('RandomResizedCrop', 'Resize'):
            transform.scale = IMG
        elif transform.type == 'ResizeEdge':
            transform.scale = IMG * 256 // 224
        elif transform.type == 'CenterCrop':
            transform.crop_size = IMG


def small_config(name, data_root, work_dir, save_checkpoints=False):
    """The real config with shrunk model, data and schedule.

    Args:
        name (str): A config file name in configs/cls, or a path.
    """
    cfg = Config.fromfile(osp.join(CLS_CONFIG_DIR, name))
    cfg.work_dir = str(work_dir)
    cfg.model.backbone.arch = SMALL_ARCH
    cfg.model.backbone.i_dynamic_groups = 4
    cfg.model.head.in_channels = SMALL_ARCH['channels'][-1]
    cfg.model.head.num_classes = NUM_CLASSES
    cfg.data_preprocessor.num_classes = NUM_CLASSES
    for loader, batch in ((cfg.train_dataloader, 3), (cfg.val_dataloader, 2),
                          (cfg.test_dataloader, 2)):
        loader.batch_size = batch
        loader.num_workers = 0
        loader.persistent_workers = False
        loader.dataset.data_root = str(data_root)
        # A 3-class subset: ImageNet's 1000 names would not match 3 folders.
        loader.dataset.metainfo = dict(classes=WNIDS)
        _shrink_pipeline(loader.dataset.pipeline)
    # Same scheduler: one warm-up epoch in a 2-epoch cosine.
    scheduler, = cfg.param_scheduler
    scheduler.warmup = 1
    cfg.train_cfg.max_epochs = 2
    cfg.default_hooks.logger.interval = 1
    if not save_checkpoints:
        cfg.default_hooks.checkpoint = None  # saving is slow, tested once
    cfg.randomness = dict(seed=0)
    if cfg.optim_wrapper.type == 'AmpOptimWrapper' and \
            not torch.cuda.is_available():
        # mmengine's AMP wrapper needs a GPU; the rest of the run is the same.
        cfg.optim_wrapper.type = 'OptimWrapper'
        cfg.optim_wrapper.pop('loss_scale')
    return cfg


def run(cfg):
    runner = Runner.from_cfg(cfg)
    record = RecordHook()
    runner.register_hook(record)
    runner.train()
    return runner, record


def _check_run(record, iters, metric_names):
    assert len(record.losses) == iters
    assert all(math.isfinite(loss) for loss in record.losses), record.losses
    assert len(record.val_metrics) == 2  # val after each epoch
    for metrics in record.val_metrics:
        assert set(metric_names) <= set(metrics), metrics
        by_hand = metrics['by_hand']
        assert metrics['accuracy/top1'] == pytest.approx(by_hand[1])
        assert metrics['accuracy/top5'] == pytest.approx(by_hand[5])


def test_train_val_imagenet_folders_with_real(imagenet_folder, tmp_path):
    # A user config adding ReaL, as the base config's comment shows.
    user_config = tmp_path / 'dwnet-tiny_real.py'
    user_config.write_text(
        f"_base_ = '{CLS_CONFIG_DIR}/dwnet-tiny_8xb128_in1k.py'\n"
        'val_evaluator = [\n'
        "    dict(type='Accuracy', topk=(1, 5)),\n"
        "    dict(type='ImageNetReaLAccuracy',\n"
        f"         real_labels_file='{imagenet_folder / 'real.json'}'),\n"
        ']\n'
        'test_evaluator = val_evaluator\n')
    cfg = small_config(str(user_config), imagenet_folder, tmp_path / 'work',
                       save_checkpoints=True)
    runner, record = run(cfg)
    if torch.cuda.is_available():
        assert type(runner.optim_wrapper).__name__ == 'AmpOptimWrapper'
    assert runner.optim_wrapper.optimizer.defaults['fused']
    train_set = runner.train_dataloader.dataset
    val_set = runner.val_dataloader.dataset
    assert len(train_set) == 9
    assert val_set.get_gt_labels().tolist() == [0, 0, 1, 1, 2, 2]
    assert osp.basename(val_set.get_data_info(0)['img_path']) == \
        'ILSVRC2012_val_00000001.JPEG'
    # 9 images in batches of 3: 3 iterations per epoch.
    _check_run(record, 6, ['accuracy/top1', 'accuracy/top5', 'real/top1'])
    assert osp.isfile(osp.join(cfg.work_dir, 'epoch_2.pth'))

    # The last validation saw the final weights: recompute its metrics from
    # the model's own predictions.
    real = json.loads((imagenet_folder / 'real.json').read_text())
    runner.model.eval()
    top1_hits, real_hits, real_count = 0, 0, 0
    with torch.no_grad():
        for batch in runner.val_dataloader:
            for sample in runner.model.val_step(batch):
                pred = int(sample.pred_label)
                top1_hits += pred == int(sample.gt_label)
                index = int(osp.basename(sample.img_path)[15:23]) - 1
                if real[index]:
                    real_count += 1
                    real_hits += pred in real[index]
    assert real_count == 5
    metrics = record.val_metrics[-1]
    assert metrics['accuracy/top1'] == pytest.approx(100 * top1_hits / 6)
    assert metrics['real/top1'] == pytest.approx(100 * real_hits / 5)


@pytest.mark.parametrize('name', [
    'dynamic-dwnet-base_16xb64_in1k.py', 'i-dynamic-dwnet-tiny_8xb128_in1k.py'
])
def test_train_val_imagenet_ann_files(name, imagenet_annfile, tmp_path):
    cfg = small_config(name, imagenet_annfile, tmp_path / 'work')
    runner, record = run(cfg)
    val_set = runner.val_dataloader.dataset
    assert val_set.ann_file == str(imagenet_annfile / 'meta' / 'val.txt')
    assert val_set.get_data_info(5)['img_path'] == str(
        imagenet_annfile / 'val' / 'ILSVRC2012_val_00000006.JPEG')
    assert val_set.get_gt_labels().tolist() == [0, 0, 1, 1, 2, 2]
    _check_run(record, 6, ['accuracy/top1', 'accuracy/top5'])


def _converted_authors_file(tmp_path):
    helpers = authors_checkpoint_helpers()
    authors = helpers.make_state_dict(
        helpers.authors_shapes(SMALL_ARCH['channels'], SMALL_ARCH['depths'],
                               classes=NUM_CLASSES))
    # Trained weights are small: unit-size positive ones reach 1e5 inside
    # the MLPs, past fp16's range (AMP on a GPU gave NaN losses).
    authors = {
        k: v * 0.02 if v.is_floating_point() and 'running_var' not in k
        else v
        for k, v in authors.items()
    }
    ckpt = tmp_path / 'dwnet-small_in1k.pth'
    torch.save(converter_tool().convert({'model': authors}), ckpt)
    return authors, str(ckpt)


def test_finetune_384_from_converted_authors_file(imagenet_folder, tmp_path):
    authors, ckpt = _converted_authors_file(tmp_path)
    cfg = small_config('dwnet-tiny_in1k-pre_8xb128_in1k-384px.py',
                       imagenet_folder, tmp_path / 'work')
    cfg.model.backbone.init_cfg.checkpoint = ckpt
    cfg.model.head.init_cfg.checkpoint = ckpt
    runner, record = run(cfg)
    _check_run(record, 6, ['accuracy/top1', 'accuracy/top5'])
    # The weights right after initialisation are the converted ones.
    init = record.initial_state
    torch.testing.assert_close(init['head.fc.weight'], authors['head.weight'])
    torch.testing.assert_close(init['head.fc.bias'], authors['head.bias'])
    torch.testing.assert_close(
        init['backbone.stages.1.blocks.0.mlp.fc1.weight'],
        authors['layers.1.blocks.0.mlp.fc1.weight'])
    torch.testing.assert_close(
        init['backbone.stages.2.blocks.0.mixer.depthwise.conv.weight'],
        authors['layers.2.blocks.0.attn2conv.conv.weight'])


def test_k12_config_resizes_kernels_of_converted_file(tmp_path):
    from mmpretrain.registry import MODELS

    from dwnet_mm.converters import resize_depthwise_kernel
    authors, ckpt = _converted_authors_file(tmp_path)
    cfg = small_config('dwnet-tiny-k12_in1k-pre_8xb128_in1k-384px.py',
                       tmp_path / 'data', tmp_path / 'work')
    cfg.model.backbone.init_cfg.checkpoint = ckpt
    cfg.model.head.init_cfg.checkpoint = ckpt
    init_default_scope('mmpretrain')
    model = MODELS.build(cfg.model)
    model.init_weights()
    state = model.state_dict()
    torch.testing.assert_close(state['head.fc.weight'], authors['head.weight'])
    for s, channels in enumerate(SMALL_ARCH['channels']):
        kernel = state[
            f'backbone.stages.{s}.blocks.0.mixer.depthwise.conv.weight']
        assert kernel.shape == (channels, 1, 12, 12)
        torch.testing.assert_close(
            kernel,
            resize_depthwise_kernel(
                authors[f'layers.{s}.blocks.0.attn2conv.conv.weight'], 12))
