# Paper Table 10: static Swin-T with its weights also shared across windows.
# Paper: top-1 80.3 (no params/FLOPs). Reading: as swin-tiny-static-attn,
# with one (heads, 49, 49) logit table per block; any input size.
_base_ = ['mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py']
custom_imports = dict(imports=['dwnet_mm'], allow_failed_imports=False)

model = dict(backbone=dict(type='SwinAblation', attention='static_shared'))

optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={'.attn_logits': dict(decay_mult=0.0)}))
