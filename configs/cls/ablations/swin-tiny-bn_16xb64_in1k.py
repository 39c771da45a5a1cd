# Paper Table 9: Swin-T with BatchNorm. Paper: top-1 80.9 (no params/FLOPs).
# Reading: the two norms of every block become BatchNorms over the tokens'
# channels; patch-embedding, patch-merging and output LayerNorms stay.
_base_ = ['mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py']
custom_imports = dict(imports=['dwnet_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        stage_cfgs=dict(block_cfgs=dict(norm_cfg=dict(type='TokenBN')))))
