# Paper Table 10: DWNet-T with depth-wise kernels shared across channels in
# groups as Swin-T's heads. Paper: top-1 81.1 (no params/FLOPs). Reading:
# 3, 6, 12, 24 kernels per stage, each shared by 32 consecutive channels.
_base_ = ['../dwnet-tiny_8xb128_in1k.py']

model = dict(backbone=dict(dw_weight_groups=(3, 6, 12, 24)))
