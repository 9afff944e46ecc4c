# SpaRTAN ImageNet-1k recipe (paper IV-A): 300 epochs, batch 2048
# (16 GPUs x 128), AdamW 2.5e-3, wd 0.03, 20 warm-up epochs then cosine,
# RandomResizedCrop, flip, RandAugment m7, mixup 0.2, cutmix, random
# erasing, stochastic depth 0.1. Not given by the paper (timm's defaults,
# which the authors' timm-style code uses): RandAugment mstd 0.5, cutmix
# alpha 1.0, random erasing 0.25, label smoothing 0.1, eval crop 0.875.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmsparx'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    # The authors' classifier: last stage, global average pool, linear (no
    # final norm, hence out_norm=None).
    backbone=dict(type='SpaRTAN', arch='t', out_indices=(3, ), out_norm=None,
                  drop_path_rate=0.1),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead', num_classes=1000, in_channels=256,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1,
                  mode='original'),
        init_cfg=None),
    init_cfg=[
        dict(type='TruncNormal', layer='Linear', std=.02, bias=0.),
        dict(type='Constant', layer=['GroupNorm', 'LayerNorm'], val=1.,
             bias=0.),
    ],
    train_cfg=dict(augments=[
        dict(type='Mixup', alpha=0.2),
        dict(type='CutMix', alpha=1.0),
    ]))

bgr_mean = [103.53, 116.28, 123.675]
bgr_std = [57.375, 57.12, 58.395]
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, backend='pillow',
         interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='RandAugment', policies='timm_increasing', num_policies=2,
         total_level=10, magnitude_level=7, magnitude_std=0.5,
         hparams=dict(pad_val=[round(x) for x in bgr_mean],
                      interpolation='bicubic')),
    dict(type='RandomErasing', erase_prob=0.25, mode='rand',
         min_area_ratio=0.02, max_area_ratio=1 / 3, fill_color=bgr_mean,
         fill_std=bgr_std),
    dict(type='PackInputs'),
]
train_dataloader = dict(batch_size=128, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=128)
test_dataloader = val_dataloader

optim_wrapper = dict(optimizer=dict(lr=2.5e-3, weight_decay=0.03))
auto_scale_lr = dict(base_batch_size=2048)
# mmsparx.engine.hooks: kill-safe checkpoint writes and every random state in the
# checkpoint, so an interrupted run resumes bit-exactly; a stop with the
# iteration named at the first non-finite input or loss.
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook'))
custom_hooks = [dict(type='RandomStateHook'), dict(type='FiniteCheckHook')]
