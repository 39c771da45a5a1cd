# Paper Table 12: DWNet-T + DW. Paper: 24M params, 3.8G FLOPs, top-1 81.9.
# Reading: an extra residual 7x7 depth-wise conv + BN between the DW-block
# and the MLP of every block.
_base_ = ['../dwnet-tiny_8xb128_in1k.py']

model = dict(backbone=dict(extra_dw=True))
