# Paper Table 9: Swin-T with centering-calibrated BN. Paper: top-1 81.2 (no
# params/FLOPs). Reading: the two norms of every block become CC-BN over the
# tokens; patch-embedding, patch-merging and output LayerNorms stay.
_base_ = ['mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py']
custom_imports = dict(imports=['dwnet_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        stage_cfgs=dict(block_cfgs=dict(norm_cfg=dict(type='TokenCCBN')))))
