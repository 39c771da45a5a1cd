# Paper Table 9: DWNet-T with LayerNorm. Paper: top-1 81.2 (no params/FLOPs).
# Reading: the norms inside the blocks become LayerNorms over channels; the
# stem, patch-merging and output LayerNorms are unchanged.
_base_ = ['../dwnet-tiny_8xb128_in1k.py']

model = dict(backbone=dict(norm_cfg=dict(type='LN2d')))
