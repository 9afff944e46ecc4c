# SparX-Mamba ImageNet-1k recipe (DeiT-style, the authors' config): 300 epochs, batch
# 2048 (16 GPUs x 128), AdamW 4e-3 wd 0.05, 20 warm-up epochs, cosine to
# 1e-5, EMA 0.9998, grad clip 5, mixup 0.8 / cutmix 1.0, label smoothing
# 0.1, RandAugment m9-mstd0.5, random erasing 0.25, bicubic eval crop.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmsparx'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(type='SparXMamba', arch='tiny', out_indices=(3, ),
                  out_norm='gn', drop_path_rate=0.2),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead', num_classes=1000, in_channels=512,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1,
                  mode='original'),
        init_cfg=None),
    init_cfg=[
        dict(type='TruncNormal', layer='Linear', std=.02, bias=0.),
        dict(type='Constant', layer=['LayerNorm', 'GroupNorm'], val=1.,
             bias=0.),
    ],
    train_cfg=dict(augments=[
        dict(type='Mixup', alpha=0.8),
        dict(type='CutMix', alpha=1.0),
    ]))

train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=128)
test_dataloader = val_dataloader

optim_wrapper = dict(
    optimizer=dict(lr=4e-3),
    clip_grad=dict(max_norm=5.0),
    paramwise_cfg=dict(custom_keys={
        '.A_logs': dict(decay_mult=0.0),
        '.Ds': dict(decay_mult=0.0),
    }))
# mmsparx.engine.hooks: kill-safe checkpoint writes and every random state in the
# checkpoint, so an interrupted run resumes bit-exactly; a stop with the
# iteration named at the first non-finite input or loss.
custom_hooks = [dict(type='EMAHook', momentum=2e-4, priority='ABOVE_NORMAL'),
                dict(type='RandomStateHook'), dict(type='FiniteCheckHook')]
auto_scale_lr = dict(base_batch_size=2048)
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook'))
