# Semantic FPN with SparX-Mamba-T on ADE20K, 80k iterations at 512x512.
# No public config exists: this follows the recipe the paper cites (PVT /
# UniFormer): AdamW 2e-4, wd 1e-4, poly decay (power 0.9) over
# 80k iterations, batch 16 (4 GPUs x 4), 512x512 crops; FPN neck 256
# channels, FPNHead 128 channels. Drop path 0.2 and the test pipeline as
# the authors' UperNet config. Paper: 49.5 mIoU (Table 4).
# ImageNet weights: as configs/sparx/mask-rcnn_sparx-mamba-t_fpn_1x_coco.py.
_base_ = [
    'mmseg::_base_/models/fpn_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py',
]
custom_imports = dict(imports=['mmsparx'], allow_failed_imports=False)

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
pretrained = 'checkpoints/sparx_mamba_t_in1k.pth'
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='SparXMamba',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        out_norm='ln',
        dmca_scale='input',
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 320, 512]),
    decode_head=dict(num_classes=150))
# As the authors' dense backbones: SyncBN under a process group (dropped
# on CPU-only machines, logged).
sync_bn = 'torch'

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    dict(type='ResizeToMultiple', size_divisor=32),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999),
                   weight_decay=1e-4),
    paramwise_cfg=dict(norm_decay_mult=0.0, custom_keys={
        '.A_logs': dict(decay_mult=0.0),
        '.Ds': dict(decay_mult=0.0),
    }))
param_scheduler = [
    dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=80000,
         by_epoch=False),
]
train_dataloader = dict(batch_size=4)
val_dataloader = dict(batch_size=1, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
# mmsparx.engine.hooks: kill-safe checkpoint writes and every random state in the
# checkpoint, so an interrupted run resumes bit-exactly; a stop with the
# iteration named at the first non-finite input or loss.
default_hooks = dict(checkpoint=dict(
    type='SafeCheckpointHook', by_epoch=False, interval=8000,
    save_best='mIoU'))
custom_hooks = [dict(type='RandomStateHook'), dict(type='FiniteCheckHook')]
