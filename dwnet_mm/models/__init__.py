from .backbones import DWNet

__all__ = ['DWNet']
