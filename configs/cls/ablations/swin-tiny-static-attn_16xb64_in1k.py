# Paper Table 4: Swin-T with static attention, weights per window and head.
# Paper: 26M params, 3.8G FLOPs, top-1 80.3. Reading: learned logits replace
# q.k^T + relative position bias (softmax and shift mask kept), no weight
# decay on them (as on the bias table); fixed 224x224 input.
_base_ = ['mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py']
custom_imports = dict(imports=['dwnet_mm'], allow_failed_imports=False)

model = dict(backbone=dict(type='SwinAblation', attention='static'))

optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={'.attn_logits': dict(decay_mult=0.0)}))
