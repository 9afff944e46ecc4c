# UperNet with SparX-Mamba-T on ADE20K, 160k iterations at 512x512 (mmseg's
# Swin-T UperNet recipe, as the authors' config): AdamW 6e-5, wd 0.01, no
# decay on norms, A_logs and Ds, 1500-iter linear warm-up from 1e-6, poly
# decay (power 1.0), batch 2 x 8 GPUs; UPerHead 512 channels, pool scales
# (1, 2, 3, 6), auxiliary FCNHead on stage 3 with weight 0.4; drop path 0.2;
# DMCA's softmax scale computed per input; test: resize to (2048, 512)
# keeping the ratio, then to a multiple of 32, whole image; checkpoints
# every 8000 iterations, the best mIoU kept. Paper: 50.0 mIoU single-scale,
# 50.8 multi-scale (the authors' retrained file: 50.2).
# ImageNet weights: as configs/sparx/mask-rcnn_sparx-mamba-t_fpn_1x_coco.py.
_base_ = [
    'mmseg::_base_/models/upernet_swin.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
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
    decode_head=dict(in_channels=[96, 192, 320, 512], num_classes=150),
    auxiliary_head=dict(in_channels=320, num_classes=150))
# The authors' backbone turns its BatchNorms into SyncBN under a process
# group; mmsparx's tools drop this on CPU-only machines and log it.
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
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999),
                   weight_decay=0.01),
    paramwise_cfg=dict(norm_decay_mult=0.0, custom_keys={
        '.A_logs': dict(decay_mult=0.0),
        '.Ds': dict(decay_mult=0.0),
    }))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0,
         end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000,
         by_epoch=False),
]
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
# mmsparx.engine.hooks: kill-safe checkpoint writes and every random state in the
# checkpoint, so an interrupted run resumes bit-exactly; a stop with the
# iteration named at the first non-finite input or loss.
default_hooks = dict(checkpoint=dict(
    type='SafeCheckpointHook', by_epoch=False, interval=8000,
    save_best='mIoU'))
custom_hooks = [dict(type='RandomStateHook'), dict(type='FiniteCheckHook')]
