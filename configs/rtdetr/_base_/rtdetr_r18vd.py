# RT-DETR-R18vd (official rtdetr_r18vd_6x_coco): PResNet-18vd (strides 8,
# 16, 32), hybrid encoder with expansion 0.5 (AIFI on the stride-32 map,
# CCFM with CSP-RepVGG blocks), 3 decoder layers, 300 queries, 100
# contrastive denoising queries. 20,184,464 parameters with 80 classes.
model = dict(
    type='RTDETR',
    # RGB in [0, 1] (the official ToImageTensor + ConvertDtype; no mean /
    # std), and the official per-batch multi-scale: a square side drawn
    # from the list (640 three times), nearest interpolation, every
    # iteration, the same on every rank; training only.
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[0, 0, 0],
        std=[255, 255, 255],
        bgr_to_rgb=True,
        pad_size_divisor=32,
        batch_augments=[
            dict(type='BatchSyncDiscreteResize',
                 sizes=[480, 512, 544, 576, 608, 640, 640, 640, 672, 704, 736,
                        768, 800],
                 interval=1,
                 interpolation='nearest'),
        ]),
    backbone=dict(
        type='PResNet',
        depth=18,
        variant='d',
        out_indices=(1, 2, 3),
        frozen_stages=-1,
        freeze_norm=False,
        norm_eval=False,
        # The official ImageNet weights (ResNet18_vd_pretrained_from_paddle);
        # convert once with tools/model_converters/rtdetr.py (a bare PResNet file).
        init_cfg=dict(type='Pretrained',
                      checkpoint='checkpoints/presnet18vd_in1k.pth')),
    neck=dict(
        type='HybridEncoder',
        in_channels=[128, 256, 512],
        feat_strides=[8, 16, 32],
        hidden_dim=256,
        num_heads=8,
        ffn_dim=1024,
        use_encoder_idx=[2],
        num_encoder_layers=1,
        expansion=0.5,
        depth_mult=1.0),
    bbox_head=dict(
        type='RTDETRHead',
        num_classes=80,
        transformer=dict(
            embed_dims=256,
            in_channels=[256, 256, 256],
            num_levels=3,
            num_points=4,
            num_heads=8,
            num_layers=3,
            ffn_dims=1024,
            num_queries=300,
            num_denoising=100,
            label_noise_ratio=0.5,
            box_noise_scale=1.0,
            eval_idx=-1),
        loss_cls=dict(type='RTDETRVarifocalLoss', alpha=0.75, gamma=2.0,
                      loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=5.0),
        loss_iou=dict(type='GIoULoss', loss_weight=2.0)),
    # The official matcher: 2 x focal cost (alpha 0.25, gamma 2) + 5 x L1
    # on normalised cxcywh + 2 x (-GIoU).
    train_cfg=dict(
        assigner=dict(
            type='HungarianAssigner',
            match_costs=[
                dict(type='FocalLossCost', weight=2.0, alpha=0.25,
                     gamma=2.0),
                dict(type='BBoxL1Cost', weight=5.0, box_format='xywh'),
                dict(type='IoUCost', iou_mode='giou', weight=2.0),
            ])),
    test_cfg=dict(max_per_img=300))
