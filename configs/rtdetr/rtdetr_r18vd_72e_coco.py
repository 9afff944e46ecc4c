# RT-DETR-R18vd on COCO, the official 6x (72-epoch) recipe: batch 4 x 4
# GPUs, AdamW 1e-4 (backbone x0.1), EMA, multi-scale 480-800 per batch,
# 640x640 evaluation. Paper: 46.4 AP (torch weights), 20.2 M, 61.2 GFLOPs.
_base_ = [
    './_base_/rtdetr_r18vd.py',
    './_base_/rtdetr_coco_detection.py',
    './_base_/rtdetr_72e.py',
]
