# Paper Table 12: DWNet-T + DW + SE. Paper: 25M params, 3.8G FLOPs,
# top-1 82.1. Reading: the extra residual depth-wise conv of
# dwnet-tiny-extra-dw, followed by SENet's SE (reduction 16) in its branch.
_base_ = ['../dwnet-tiny_8xb128_in1k.py']

model = dict(backbone=dict(extra_dw=True, extra_dw_se_ratio=1 / 16))
