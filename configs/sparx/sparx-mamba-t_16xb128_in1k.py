# SparX-Mamba-T on ImageNet-1k (paper top-1: 83.5); eval crop 0.9.
_base_ = ['../_base_/sparx_mamba_in1k.py']
custom_imports = dict(imports=['mmsparx'], allow_failed_imports=False)

model = dict(
    backbone=dict(arch='tiny', drop_path_rate=0.2),
    head=dict(in_channels=512))

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=249, edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
