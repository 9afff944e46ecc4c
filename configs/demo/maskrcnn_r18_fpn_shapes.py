# Mask R-CNN R18-FPN from scratch on the generated COCO-format shapes set
# (python -m mmsparx.datasets coco data/demo_coco): the recipe every backbone
# of the comparison in configs/demo/README.md shares.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmsparx'], allow_failed_imports=False)

data_root = 'data/demo_coco/'
metainfo = dict(
    classes=('rectangle', 'ellipse', 'triangle'),
    palette=[(220, 20, 60), (0, 128, 255), (60, 180, 75)])
image_scale = (256, 256)
max_epochs = 12

model = dict(
    backbone=dict(
        depth=18,
        frozen_stages=-1,
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        norm_eval=False,
        init_cfg=None),
    # CPU budget: a 128-channel FPN and heads (half of mmdet's widths, about
    # half the time per step; the backbone comparison of configs/demo/README.md
    # runs every backbone with them). Images hold at most 4 objects, so
    # fewer proposals and RoI samples lose nothing; a fixed RoIAlign sampling
    # ratio bounds its cost (the adaptive default made RoIAlign 60 % of a
    # CPU step).
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=128),
    rpn_head=dict(in_channels=128, feat_channels=128),
    roi_head=dict(
        bbox_roi_extractor=dict(roi_layer=dict(sampling_ratio=2),
                                out_channels=128),
        mask_roi_extractor=dict(roi_layer=dict(sampling_ratio=2),
                                out_channels=128),
        bbox_head=dict(num_classes=3, in_channels=128, fc_out_channels=512),
        mask_head=dict(num_classes=3, in_channels=128,
                       conv_out_channels=128)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=300),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=300)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                    'scale_factor')),
]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(
        type='CheckedCocoDataset',  # names what it drops
        data_root=data_root, metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(
        type='CheckedCocoDataset',  # names what it drops
        data_root=data_root, metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

train_cfg = dict(max_epochs=max_epochs, val_interval=3)
optim_wrapper = dict(
    _delete_=True, type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=4e-4, weight_decay=0.05),
    clip_grad=dict(max_norm=10.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=50),
    dict(type='MultiStepLR', by_epoch=True, begin=0, end=max_epochs,
         milestones=[9, 11], gamma=0.1),
]
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(type='SafeCheckpointHook', interval=max_epochs,
                    max_keep_ckpts=1))
# mmsparx.engine.hooks: kill-safe checkpoint writes and every random state in the
# checkpoint, so an interrupted run resumes bit-exactly; a stop with the
# iteration named at the first non-finite input or loss.
custom_hooks = [dict(type='RandomStateHook'), dict(type='FiniteCheckHook')]
auto_scale_lr = dict(enable=False, base_batch_size=4)
# One seed: a rerun on the same machine reproduces the figures of
# configs/demo/README.md (without it, each run draws its own seed and the
# mAP of 48 images moves by several points).
randomness = dict(seed=0)
