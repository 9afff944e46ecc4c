# RT-DETR-R34vd on COCO (official rtdetr_r34vd_6x_coco): PResNet-34vd, the
# R18 encoder (expansion 0.5), 4 decoder layers. Paper: 48.8 AP, 31.4 M,
# 93.3 GFLOPs.
_base_ = [
    './_base_/rtdetr_r18vd.py',
    './_base_/rtdetr_coco_detection.py',
    './_base_/rtdetr_72e.py',
]
model = dict(
    backbone=dict(
        depth=34,
        init_cfg=dict(type='Pretrained',
                      checkpoint='checkpoints/presnet34vd_in1k.pth')),
    bbox_head=dict(transformer=dict(num_layers=4)))
