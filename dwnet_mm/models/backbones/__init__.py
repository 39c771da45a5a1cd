from .dwnet import DWNet
from .swin_ablation import build_swin_ablation

__all__ = ['DWNet', 'build_swin_ablation']
