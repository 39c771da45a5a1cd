# Paper Table 9: DWNet-T with centering-calibrated BN. Paper: top-1 81.7 (no
# params/FLOPs). Reading: the BatchNorms inside the blocks become CC-BN; the
# stem, patch-merging and output LayerNorms are unchanged.
_base_ = ['../dwnet-tiny_8xb128_in1k.py']

model = dict(backbone=dict(norm_cfg=dict(type='CCBN')))
