"""Params and FLOPs (multiply-accumulates) with mmengine's analysis.

The FLOPs include dwnet_mm's own ops (the I-Dynamic aggregation): see
:mod:`dwnet_mm.utils.flop_handles`.
"""
import torch
from mmengine.analysis import parameter_count

from .flop_handles import flop_analyzer

# The paper's classification models at 224x224: name -> (backbone kwargs,
# published params in M, published GFLOPs).
PAPER_CLS_MODELS = {
    'dwnet_tiny': (dict(arch='tiny', conv_type='static'), 24, 3.8),
    'dynamic_dwnet_tiny': (dict(arch='tiny', conv_type='dynamic'), 51, 3.8),
    'i_dynamic_dwnet_tiny': (dict(arch='tiny', conv_type='i_dynamic'), 26,
                             4.4),
    'dwnet_base': (dict(arch='base', conv_type='static'), 74, 12.9),
    'dynamic_dwnet_base': (dict(arch='base', conv_type='dynamic'), 162, 13.0),
    'i_dynamic_dwnet_base': (dict(arch='base', conv_type='i_dynamic'), 80,
                             14.3),
}


class DWNetClassifier(torch.nn.Module):
    """Backbone + linear head: the paper's classification network."""

    def __init__(self, num_classes=1000, **backbone_kwargs):
        super().__init__()
        from ..models import DWNet
        self.backbone = DWNet(out_type='avg_featmap', **backbone_kwargs)
        self.head = torch.nn.Linear(self.backbone.out_channels[-1],
                                    num_classes)

    def forward(self, x):
        return self.head(self.backbone(x)[-1])


def count_complexity(model, input_shape):
    """Params and MACs of ``model`` on one input of ``input_shape``.

    Args:
        model (nn.Module): Model in eval mode.
        input_shape (tuple): (N, C, H, W) of the input.

    Returns:
        tuple[int, int]: Number of parameters and of multiply-accumulates.
    """
    model = model.eval()
    with torch.no_grad():
        macs = flop_analyzer(model, torch.randn(*input_shape)).total()
    return parameter_count(model)[''], macs


def classification_table(names=None, input_size=224):
    """Rows (name, params M, GFLOPs, paper params M, paper GFLOPs)."""
    rows = []
    for name in names or PAPER_CLS_MODELS:
        kwargs, paper_params, paper_flops = PAPER_CLS_MODELS[name]
        params, macs = count_complexity(
            DWNetClassifier(**kwargs), (1, 3, input_size, input_size))
        rows.append((name, params / 1e6, macs / 1e9, paper_params,
                     paper_flops))
    return rows
