# Mask R-CNN + FPN with SpaRTAN-T, 1x schedule (mmdet's Swin-T recipe):
# AdamW 1e-4, wd 0.05, no decay on norms, 1000-iter warm-up, 12 epochs with
# steps [8, 11], batch 2 x 8 GPUs, 1333x800. Not in the paper (its detector
# is RT-DETR); SpaRTAN-T gives FPN its four stages (32, 64, 128, 256
# channels at strides 4-32), each with a LayerNorm.
# The backbone's BatchNorms see 2 images per GPU, so, as in mmdet's ResNet
# recipes, they keep their ImageNet statistics (norm_eval=True) and learn
# only their affine parameters.
# ImageNet weights: no public SpaRTAN-T file exists; train one with
#   configs/spartan/spartan-t_16xb128_in1k.py
# or, for a file trained with the authors' code, convert it once with
#   python tools/model_converters/spartan.py AUTHORS.pth checkpoints/spartan_t_in1k.pth
# (their {'model': ...} file also loads as it is: the backbone converts it
# on load and reports every key).
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

pretrained = 'checkpoints/spartan_t_in1k.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='SpaRTAN',
        arch='t',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        out_norm='ln',
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[32, 64, 128, 256]))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999),
                   weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
         end=1000),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True,
         milestones=[8, 11], gamma=0.1),
]
auto_scale_lr = dict(enable=False, base_batch_size=16)
# mmsparx.engine.hooks: kill-safe checkpoint writes and every random state in the
# checkpoint, so an interrupted run resumes bit-exactly; a stop with the
# iteration named at the first non-finite input or loss.
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook'))
custom_hooks = [dict(type='RandomStateHook'), dict(type='FiniteCheckHook')]
