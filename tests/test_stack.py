"""The reference stack: pins, compiled mmcv ops, frameworks, resume."""
import os
import pickle
import re

import pytest
import torch
import torch.nn as nn
from mmengine.model import BaseModel
from mmengine.runner import Runner

import dwnet_mm

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pins():
    pins = {}
    with open(os.path.join(REPO, 'requirements', 'constraints.txt')) as f:
        for line in f:
            m = re.match(r'^([A-Za-z0-9_-]+)==(\S+)', line)
            if m:
                pins[m.group(1)] = m.group(2)
    return pins


@pytest.mark.parametrize('dist,module', [('torch', 'torch'),
                                         ('torchvision', 'torchvision'),
                                         ('mmengine', 'mmengine'),
                                         ('mmcv', 'mmcv'), ('mmdet', 'mmdet'),
                                         ('mmsegmentation', 'mmseg'),
                                         ('mmpretrain', 'mmpretrain')])
def test_reference_versions(dist, module):
    version = __import__(module).__version__.split('+')[0]
    assert version == _pins()[dist]


def test_numpy_below_2():
    import numpy
    assert int(numpy.__version__.split('.')[0]) < 2


def test_mmcv_compiled_ops_on_cpu():
    from mmcv.ops import RoIAlign, nms
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.],
                          [50., 50., 60., 60.]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    dets, keep = nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
    assert dets.shape == (2, 5)

    feat = torch.arange(16.).view(1, 1, 4, 4)
    rois = torch.tensor([[0., 0., 0., 3., 3.]])
    out = RoIAlign((2, 2), spatial_scale=1., sampling_ratio=1,
                   aligned=False)(feat, rois)
    # Bin centres (0.75, 0.75) ... (2.25, 2.25), bilinear on a linear ramp.
    expected = torch.tensor([[[[3.75, 5.25], [9.75, 11.25]]]])
    torch.testing.assert_close(out, expected)


def test_frameworks_import():
    import mmdet.models  # noqa: F401
    import mmpretrain.models  # noqa: F401
    import mmseg.models  # noqa: F401
    from dwnet_mm.utils import available_frameworks
    assert available_frameworks() == ['mmpretrain', 'mmdet', 'mmseg']


class ToyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, labels=None, mode='tensor'):
        out = self.linear(inputs)
        if mode == 'loss':
            return dict(loss=((out - labels)**2).mean())
        return out


def _runner(work_dir, resume=False):
    data = [(torch.randn(2), torch.randn(1)) for _ in range(8)]
    return Runner(
        model=ToyModel(),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=data,
            sampler=dict(type='DefaultSampler', shuffle=False),
            collate_fn=dict(type='default_collate'),
            batch_size=2),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9)),
        param_scheduler=dict(type='MultiStepLR', milestones=[2],
                             by_epoch=True),
        train_cfg=dict(by_epoch=True, max_epochs=3),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1)),
        resume=resume,
        default_scope='mmengine')


class Unsafe:
    pass


def added_safe_globals(before):
    """Entries added to torch's safe-globals list since ``before``, except
    those torch registers itself when it imports its own modules lazily."""
    return [
        g for g in torch.serialization.get_safe_globals() if g not in before
        and not str(getattr(g, '__module__', '')).startswith('torch')
    ]


def test_resume_with_safe_torch_load(tmp_path):
    """mmengine's own resume files load through dwnet_mm's safe loader,
    inside a scoped context (the tools use it); torch's process-wide
    safe-globals list is never touched."""
    assert 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD' not in os.environ
    safe_globals = torch.serialization.get_safe_globals()
    runner = _runner(tmp_path)
    runner.train()
    ckpt = tmp_path / 'epoch_3.pth'
    assert ckpt.exists()
    os.remove(tmp_path / 'epoch_3.pth')  # resume from epoch 2
    with open(tmp_path / 'last_checkpoint', 'w') as f:
        f.write(str(tmp_path / 'epoch_2.pth'))
    # torch's safe loader alone refuses mmengine's resume files.
    with pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / 'epoch_2.pth')
    resumed = _runner(tmp_path, resume=True)
    with dwnet_mm.allow_mmengine_checkpoints():
        assert added_safe_globals(safe_globals) == []
        resumed.train()
    assert resumed.epoch == 3
    assert resumed.iter == 12
    assert added_safe_globals(safe_globals) == []
    assert getattr not in torch.serialization.get_safe_globals()
    # Safe loading is still on for anything not allow-listed.
    torch.save({'x': Unsafe()}, tmp_path / 'unsafe.pth')
    with pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / 'unsafe.pth')
    with dwnet_mm.allow_mmengine_checkpoints(), \
            pytest.raises(dwnet_mm.safe_loading.UnsafeCheckpointError):
        _runner(tmp_path, resume=True).load_checkpoint(
            str(tmp_path / 'unsafe.pth'))
