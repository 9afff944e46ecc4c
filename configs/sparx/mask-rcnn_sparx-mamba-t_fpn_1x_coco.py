# Mask R-CNN + FPN with SparX-Mamba-T, 1x schedule (mmdet's Swin-T recipe,
# as the authors' config): AdamW 1e-4, wd 0.05, no decay on norms, 1000-iter warm-up,
# 12 epochs with steps [8, 11], batch 2 x 8 GPUs, 1333x800.
# Paper: 48.1 box AP / 43.1 mask AP. As the authors' config: drop path 0.2,
# SyncBN in the backbone when training on several GPUs, the best checkpoint
# kept (save_best='auto').
# ImageNet weights: convert the authors' file once with
#   python tools/model_converters/sparx_mamba.py sparx_mamba_tiny_in1k.pth checkpoints/sparx_mamba_t_in1k.pth
# (the authors' file also loads as it is: the backbone converts on load;
# the learned DMCA scales start from the authors' initial value).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmsparx'], allow_failed_imports=False)

# mmsparx.datasets.CheckedCocoDataset: mmdet's CocoDataset that names each
# box it drops or clips and each broken image (README, "Data checks").
train_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
val_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
test_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))

pretrained = 'checkpoints/sparx_mamba_t_in1k.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='SparXMamba',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        out_norm='ln',
        # The authors' detection backbone learns DMCA's softmax scale (one
        # scalar per ganglion layer, init ((800*1333/16)/64)^-0.5); their
        # COCO checkpoints hold it.
        dmca_scale='learned',
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 320, 512]))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999),
                   weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0, custom_keys={
        '.A_logs': dict(decay_mult=0.0),
        '.Ds': dict(decay_mult=0.0),
    }))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
         end=1000),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True,
         milestones=[8, 11], gamma=0.1),
]
auto_scale_lr = dict(enable=False, base_batch_size=16)
# The authors' backbone turns its BatchNorms into SyncBN under a process
# group; mmsparx's tools drop this on CPU-only machines and log it.
sync_bn = 'torch'
# mmsparx.engine.hooks: kill-safe checkpoint writes and every random state in the
# checkpoint, so an interrupted run resumes bit-exactly; a stop with the
# iteration named at the first non-finite input or loss.
default_hooks = dict(
    checkpoint=dict(type='SafeCheckpointHook', save_best='auto'))
custom_hooks = [dict(type='RandomStateHook'), dict(type='FiniteCheckHook')]
