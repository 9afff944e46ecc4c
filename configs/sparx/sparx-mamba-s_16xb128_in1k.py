# SparX-Mamba-S on ImageNet-1k (paper top-1: 84.2); eval crop 0.95.
_base_ = ['../_base_/sparx_mamba_in1k.py']
custom_imports = dict(imports=['mmsparx'], allow_failed_imports=False)

model = dict(
    backbone=dict(arch='small', drop_path_rate=0.3),
    head=dict(in_channels=544))

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=236, edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
