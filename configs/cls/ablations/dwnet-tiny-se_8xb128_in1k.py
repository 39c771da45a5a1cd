# Paper Table 6: DWNet-T + SE. Paper: 24M params, 3.8G FLOPs, top-1 81.7.
# Reading: SENet's SE (reduction 16) in each DW-block, after the depth-wise
# conv's norm + ReLU, before the last 1x1 conv.
_base_ = ['../dwnet-tiny_8xb128_in1k.py']

model = dict(backbone=dict(se_ratio=1 / 16))
