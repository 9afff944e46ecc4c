# Mask R-CNN + FPN with SparX-Mamba-T, 3x multi-scale-crop schedule
# (mmdet's Swin-T 3x recipe): 36 epochs, steps [27, 33], DETR-style
# multi-scale (short side 480..800) or resize 400/500/600 + crop 384..600.
# Paper: 50.2 box AP / 44.7 mask AP.
_base_ = ['./mask-rcnn_sparx-mamba-t_fpn_1x_coco.py']
custom_imports = dict(imports=['mmsparx'], allow_failed_imports=False)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='RandomChoice',
        transforms=[
            [
                dict(type='RandomChoiceResize',
                     scales=[(s, 1333) for s in range(480, 801, 32)],
                     keep_ratio=True)
            ],
            [
                dict(type='RandomChoiceResize',
                     scales=[(400, 1333), (500, 1333), (600, 1333)],
                     keep_ratio=True),
                dict(type='RandomCrop', crop_type='absolute_range',
                     crop_size=(384, 600), allow_negative_crop=True),
                dict(type='RandomChoiceResize',
                     scales=[(s, 1333) for s in range(480, 801, 32)],
                     keep_ratio=True)
            ],
        ]),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
         end=1000),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[27, 33], gamma=0.1),
]
