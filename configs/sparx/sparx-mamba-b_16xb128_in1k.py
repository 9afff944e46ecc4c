# SparX-Mamba-B on ImageNet-1k (paper top-1: 84.5); eval crop 0.95.
_base_ = ['../_base_/sparx_mamba_in1k.py']
custom_imports = dict(imports=['mmsparx'], allow_failed_imports=False)

model = dict(
    backbone=dict(arch='base', drop_path_rate=0.5),
    head=dict(in_channels=636))

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=236, edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
