# Paper Table 6: Swin-T + SE. Paper: 29M params, 4.5G FLOPs, top-1 81.2.
# Reading: SENet's SE (reduction 16) on each block's attention output (whole
# image, after the windows merge), before stochastic depth and the residual.
_base_ = ['mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py']
custom_imports = dict(imports=['dwnet_mm'], allow_failed_imports=False)

model = dict(backbone=dict(type='SwinAblation', se_ratio=1 / 16))
