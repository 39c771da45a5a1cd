"""The reference DWNet as an OpenMMLab backbone (``type='ReferenceDWNet'``),
so that a detector, segmentor or classifier config can be built around it
with everything else unchanged."""
from copy import deepcopy

from mmengine.registry import MODELS

from .dwnet import ReferenceDWNet

# REFERENCE.md section 2.
ARCHS = {
    'tiny': dict(channels=[96, 192, 384, 768], depths=[2, 2, 6, 2]),
    'base': dict(channels=[128, 256, 512, 1024], depths=[2, 2, 18, 2]),
}


@MODELS.register_module(name='ReferenceDWNet', force=True)
class ReferenceBackbone(ReferenceDWNet):
    """Takes a DWNet backbone config's arguments; those that do not change
    the function it computes (init, drop path, norm type, with_cp) are
    ignored: the comparisons run in eval mode or with drop_path 0."""

    def __init__(self, arch='tiny', conv_type='static', kernel_size=7,
                 i_dynamic_groups=32, pad_to_window=False,
                 out_type='avg_featmap', out_indices=-1, **ignored):
        arch = deepcopy(ARCHS[arch] if isinstance(arch, str) else arch)
        dense = out_type == 'featmap'
        if dense and tuple(out_indices) != (0, 1, 2, 3):
            raise ValueError('the reference returns all four stages')
        super().__init__(arch['channels'], arch['depths'], conv_type,
                         kernel_size, i_dynamic_groups, pad_to_window, dense)


def reference_backbone_cfg(backbone_cfg):
    """The reference's config for a DWNet backbone config (a dict)."""
    cfg = {k: deepcopy(v) for k, v in backbone_cfg.items()
           if k not in ('_delete_', 'init_cfg')}
    cfg['type'] = 'ReferenceDWNet'
    return cfg
