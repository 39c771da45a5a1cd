# A user's own mmpretrain config: inherit an upstream base, swap in DWNet.
_base_ = 'mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py'
custom_imports = dict(imports=['dwnet_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(_delete_=True, type='DWNet', arch='tiny',
                  drop_path_rate=0.2, out_type='avg_featmap',
                  out_indices=-1),
    neck=None,
    head=dict(in_channels=768))
