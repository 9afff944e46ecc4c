# SparX-Swin-B on ImageNet-1k (paper top-1: 83.9); the SparX-Mamba
# recipe (the paper trains both families alike); eval crop 0.95.
_base_ = ['../_base_/sparx_mamba_in1k.py']
custom_imports = dict(imports=['mmsparx'], allow_failed_imports=False)

model = dict(
    backbone=dict(type='SparXSwin', arch='base', drop_path_rate=0.5),
    head=dict(in_channels=616))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={
    '.relative_position_bias_table': dict(decay_mult=0.0)}))

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=236, edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
