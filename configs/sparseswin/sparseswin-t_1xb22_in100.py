# SparseSwin-T on ImageNet-100 (paper: 86.96 % top-1; 87.26 % with the L2
# attention regulariser at lambda 1e-4, set here). 20,287,971 parameters:
# the paper's 17.58 M is not this model (README).
# Recipe (the authors' train_imagenet100.py): Adam lr 1e-4, no weight decay,
# batch 22, RandomResizedCrop 224 + flip; test resize 256, centre crop 224;
# patch embedding and stages 1-2 frozen (their freeze_12=True, here
# frozen_stages=2). Epochs are not published for ImageNet-100: 100, as
# their CIFAR runs.
# Data: an ImageNet-format folder, data/imagenet100/{train,val}/<wnid>/*.JPEG
# (optionally meta/{train,val}.txt) and meta/classes.txt with the 100 wnids
# in sorted order. The common Kaggle copy (train.X1-4/, val.X/) becomes one
# by linking every train.X*/<wnid> into train/ and val.X/<wnid> into val/.
_base_ = ['../_base_/sparseswin_t_cls.py']

model = dict(backbone=dict(frozen_stages=2))

data_root = 'data/imagenet100/'
classes = data_root + 'meta/classes.txt'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=256, edge='short'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=22, num_workers=8,
    dataset=dict(type='ImageNet', data_root=data_root, split='train',
                 classes=classes, pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=64, num_workers=8,
    dataset=dict(type='ImageNet', data_root=data_root, split='val',
                 classes=classes, pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
test_dataloader = val_dataloader

optim_wrapper = dict(optimizer=dict(type='Adam', lr=1e-4, weight_decay=0.0))
param_scheduler = []  # the authors keep the learning rate constant
auto_scale_lr = dict(base_batch_size=22)
