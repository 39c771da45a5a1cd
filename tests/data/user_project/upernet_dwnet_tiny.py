# A user's own mmseg config: inherit an upstream base, swap in DWNet (the
# README's recipe). In the mmseg scope DWNet returns the four feature maps
# UPerHead takes by default.
_base_ = 'mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py'
custom_imports = dict(imports=['dwnet_mm'], allow_failed_imports=False)

model = dict(
    pretrained=None,  # the base's ResNet weights do not apply
    backbone=dict(
        _delete_=True,
        type='DWNet',
        arch='tiny',
        norm_cfg=dict(type='SyncBN', requires_grad=True)),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
