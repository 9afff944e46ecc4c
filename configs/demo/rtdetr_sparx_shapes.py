# The `make demo` job: RT-DETR with a small SparX-Mamba backbone, from
# scratch, on the generated COCO-format shapes set (48 training images,
# 256x256), 40 epochs on 2 CPU processes: about 11 minutes on 2 cores,
# bbox mAP 0.44 (README.md, "The demo", has the figures).
#
# The backbone is SparX-Mamba-T's design at a CPU size (an arch dict:
# depths 1-1-3-1, widths 48-288, the T ganglion rule, 4.4 M parameters):
# with no ImageNet weights (nothing is downloaded) and 12 minutes of two
# cores, the full T sees too few images to learn. The detector is RT-DETR
# (configs/rtdetr/) as configs/demo/rtdetr_r18vd_shapes.py trains it; Mask
# R-CNN with the same backbone is `make demo DEMO=maskrcnn`
# (maskrcnn_sparx_small_fpn_shapes.py).
_base_ = ['./rtdetr_r18vd_shapes.py']

side = 256
max_epochs = 40

model = dict(
    data_preprocessor=dict(batch_augments=[
        dict(type='BatchSyncDiscreteResize',
             sizes=[192, 224, 256, 256, 256, 288, 320])]),
    backbone=dict(
        _delete_=True,
        type='SparXMamba',
        arch=dict(depths=(1, 1, 3, 1), channels=(48, 96, 192, 288),
                  stem='v1', strides=(1, 1, 2, 1),
                  ganglion_start=(None, 1, 0, 0)),
        out_indices=(1, 2, 3),  # strides 8, 16, 32
        drop_path_rate=0.0,
        out_norm='ln',
        init_cfg=None),
    neck=dict(in_channels=[96, 192, 288]))

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
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
train_cfg = dict(max_epochs=max_epochs, val_interval=4)
default_hooks = dict(checkpoint=dict(interval=max_epochs))
