# RT-DETR's COCO detection data (official rtdetr_pytorch v1:
# configs/dataset/coco_detection.yml, configs/rtdetr/include/dataloader.yml,
# src/data/transforms.py = torchvision.transforms.v2, and the per-batch
# multi-scale of src/zoo/rtdetr/rtdetr.py), written with mmdet 3.3 / mmcv
# transforms. Each step names the official op it stands for and how it
# differs.
#
# Labels: CocoDataset maps COCO category ids to 0-based labels (the
# official remap_mscoco_category); for your own data set `metainfo.classes`
# (category names), or every annotation is dropped and the model learns
# nothing (the "mAP 0 on custom data" report).
# mmdet's CocoDataset that names each box it drops or clips and each broken
# image (mmsparx.datasets.CheckedCocoDataset; README, "Data checks").
dataset_type = 'CheckedCocoDataset'
data_root = 'data/coco/'
backend_args = None

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    # RandomPhotometricDistort(p=0.5). torchvision's p is per operation
    # (brightness, contrast, saturation, hue, channel permutation each with
    # p 0.5, contrast before or after at random) and mmdet's
    # PhotoMetricDistortion already applies each of its operations with
    # probability 0.5 in the same order: no RandomApply around it (that
    # would halve every operation's rate to 0.25).
    # Ranges: contrast and saturation (0.5, 1.5) as the official; hue
    # +-0.05 of a turn = +-18 degrees (mmdet's hue is in degrees, 0-360,
    # on float images); brightness is multiplicative in the official
    # (x0.875-1.125) but additive here: +-32 = 0.125 * 255, the official
    # bound at a white pixel (darker pixels move more than in the official).
    # Unlike torchvision, mmdet does not clip to [0, 255] after each step
    # (inputs can reach about -0.13 to 1.7 after the /255; torchvision keeps
    # [0, 1]), and its contrast scales around 0 rather than the grey mean.
    dict(type='PhotoMetricDistortion',
         brightness_delta=32,
         contrast_range=(0.5, 1.5),
         saturation_range=(0.5, 1.5),
         hue_delta=18),
    # RandomZoomOut(fill=0): side_range (1, 4), p 0.5, one ratio for both
    # sides, random placement on a zero canvas -- the same as Expand.
    dict(type='Expand', mean=[0, 0, 0], to_rgb=True, ratio_range=(1, 4),
         prob=0.5),
    # RandomIoUCrop(p=0.8): options {0, .1, .3, .5, .7, .9, 1 = no crop},
    # crop sides 0.3-1 of the image, aspect 0.5-2, keep boxes whose centre
    # lies inside. MinIoURandomCrop's defaults draw from the same options
    # (it adds 0 and "no crop" to min_ious itself). Differences it cannot be
    # configured away from: it needs the minimum IoU over all boxes to pass
    # (torchvision: the maximum over the boxes centred inside), so crops at
    # high thresholds are rarer; 50 trials per option instead of 40.
    dict(type='RandomApply',
         transforms=[dict(type='MinIoURandomCrop',
                          min_ious=(0.1, 0.3, 0.5, 0.7, 0.9),
                          min_crop_size=0.3)],
         prob=0.8),
    # SanitizeBoundingBox(min_size=1). mmdet keeps w > 1 and h > 1 (strict;
    # torchvision keeps >= 1). keep_empty=False keeps an image whose boxes
    # are all dropped, with no ground truth, as the official does (a
    # negative-only image): the head trains on it without matching or
    # denoising queries. keep_empty=True would return None and make the
    # dataset draw another image instead.
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1, 1), keep_empty=False),
    # RandomHorizontalFlip (p 0.5).
    dict(type='RandomFlip', prob=0.5),
    # Resize(size=[640, 640]): no aspect ratio kept (bilinear, cv2; the
    # official's torchvision resize may antialias when shrinking).
    dict(type='Resize', scale=(640, 640), keep_ratio=False),
    # The official's second SanitizeBoundingBox(min_size=1), after the
    # resize: zoom-out then resize can shrink boxes below a pixel.
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1, 1), keep_empty=False),
    # ToImageTensor + ConvertDtype + ConvertBox(cxcywh, normalize): the
    # [0, 1] scaling is the data preprocessor's (std 255), the normalised
    # cxcywh boxes are the head's.
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    # Resize(size=[640, 640]); the boxes are rescaled to the original image
    # through scale_factor.
    dict(type='Resize', scale=(640, 640), keep_ratio=False),
    # After the resize: evaluation compares with the original boxes.
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                    'scale_factor')),
]

# Batch 4 per GPU on 4 GPUs = the official total of 16 (see auto_scale_lr
# in rtdetr_72e.py for other totals). No aspect-ratio grouping: every image
# leaves the pipeline at 640x640. drop_last as the official train loader.
train_dataloader = dict(
    batch_size=4,
    num_workers=4,
    persistent_workers=True,
    drop_last=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'),
        # The official trains on every image, those without objects too
        # (mmdet's usual filter_empty_gt=True would drop ~1 % of COCO).
        filter_cfg=None,
        pipeline=train_pipeline,
        backend_args=backend_args))
# The official evaluates 8 images per GPU.
val_dataloader = dict(
    batch_size=8,
    num_workers=4,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/instances_val2017.json',
        data_prefix=dict(img='val2017/'),
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args))
test_dataloader = val_dataloader

val_evaluator = dict(
    type='CocoMetric',
    ann_file=data_root + 'annotations/instances_val2017.json',
    metric='bbox',
    format_only=False,
    backend_args=backend_args)
test_evaluator = val_evaluator
