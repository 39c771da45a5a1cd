# I-Dynamic-T (kernel per position, 32 channel groups)
# on ImageNet-1K, 224x224, as the authors trained it: 8 GPUs x 64 images
# with gradients accumulated over 2 micro-batches (1024 images per update,
# BN statistics over 64), fp32 (their I-Dynamic kernel has no fp16).
# Paper: 26M params, 4.4G FLOPs, top-1 81.8, ReaL 87.1.
# (The file name keeps the total batch of the other tiny configs.)
_base_ = ['./_base_/dwnet_in1k_224.py']

model = dict(
    backbone=dict(arch='tiny', conv_type='i_dynamic', drop_path_rate=0.2),
    head=dict(in_channels=768))

train_dataloader = dict(batch_size=64)
val_dataloader = dict(batch_size=64)
test_dataloader = val_dataloader

# The authors' trainer all-reduces and clips (norm 5) after every
# micro-batch; MicroBatchClipOptimWrapper does the same (mmengine's
# OptimWrapper would clip once per update).
accumulative_counts = 2
optim_wrapper = dict(
    type='MicroBatchClipOptimWrapper',
    accumulative_counts=accumulative_counts)
# lr 1e-3 at 8 x 64 x 2: the Runner counts the images of one micro-batch.
auto_scale_lr = dict(base_batch_size=1024 // accumulative_counts)
