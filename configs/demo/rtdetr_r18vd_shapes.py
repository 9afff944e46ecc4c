# RT-DETR-R18vd from scratch on the generated COCO-format shapes set: the
# longer CPU run of the RT-DETR configs (not part of `make demo`):
#   python tools/misc/demo.py --config configs/demo/rtdetr_r18vd_shapes.py \
#       --work-dir work_dirs/demo_rtdetr --num-train 64 --size 256
# configs/rtdetr/rtdetr_r18vd_72e_coco.py as it is, but for the CPU budget:
# 320x320 input (multi-scale 256-384), no zoom-out / IoU crop (objects
# would shrink to a few pixels at this size), no ImageNet backbone (nothing
# is downloaded), so the backbone learns at the full rate, a 100-iteration
# warm-up and EMA warm-up, and a validation every 2 epochs for the curve.
_base_ = ['../rtdetr/rtdetr_r18vd_72e_coco.py']

data_root = 'data/demo_coco/'
metainfo = dict(
    classes=('rectangle', 'ellipse', 'triangle'),
    palette=[(220, 20, 60), (0, 128, 255), (60, 180, 75)])
side = 320
max_epochs = 36

model = dict(
    data_preprocessor=dict(batch_augments=[
        dict(type='BatchSyncDiscreteResize',
             sizes=[256, 288, 320, 320, 320, 352, 384])]),
    backbone=dict(init_cfg=None),
    bbox_head=dict(num_classes=3))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PhotoMetricDistortion', brightness_delta=32,
         contrast_range=(0.5, 1.5), saturation_range=(0.5, 1.5),
         hue_delta=18),
    dict(type='RandomFlip', prob=0.5),
    dict(type='Resize', scale=(side, side), keep_ratio=False),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1, 1), keep_empty=False),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(side, side), keep_ratio=False),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                    'scale_factor')),
]
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(
        data_root=data_root, metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(
        data_root=data_root, metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

optim_wrapper = dict(
    optimizer=dict(lr=2e-4),
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=1.0)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
         end=100),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=2)
default_hooks = dict(
    logger=dict(interval=4),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1, save_best=None))
custom_hooks = [
    dict(type='EMAHook', ema_type='ExpMomentumEMA', momentum=0.0001,
         gamma=100, update_buffers=True, priority=49),
    dict(type='RandomStateHook'),
    dict(type='FiniteCheckHook'),
]
auto_scale_lr = dict(enable=False, base_batch_size=16)
# One seed: a rerun on the same machine reproduces the demo's figures.
randomness = dict(seed=0)
