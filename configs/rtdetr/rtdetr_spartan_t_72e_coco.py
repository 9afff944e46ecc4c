# RT-DETR with SpaRTAN-T on COCO (SpaRTAN paper, Table III: 50.0 AP, 21.5 M,
# 75.9 GFLOPs, 70 epochs with "the exact training setup" of RT-DETR).
# The paper names no encoder/decoder setting; its totals point at the
# R50-size hybrid encoder (expansion 1.0) and 5 decoder layers, which give
# 72.8 / 75.9 GFLOPs for XT / T, with two AIFI layers on the stride-32 map
# (+0.79 M, +0.6 GFLOPs) to reach the paper's parameter counts: 20.26 M
# (+1.3 %) and 21.82 M (+1.5 %). README.md gives the arithmetic and the
# one-AIFI alternative. The paper trains 70 epochs; the schedule here is
# RT-DETR's 72 (`train_cfg.max_epochs=70` for the paper's length).
_base_ = [
    './_base_/rtdetr_r18vd.py',
    './_base_/rtdetr_coco_detection.py',
    './_base_/rtdetr_72e.py',
]
model = dict(
    backbone=dict(
        _delete_=True,
        type='SpaRTAN',
        arch='t',
        out_indices=(1, 2, 3),  # strides 8, 16, 32
        out_norm=None,  # the encoder's input projections normalise
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained',
                      checkpoint='checkpoints/spartan_t_in1k.pth')),
    neck=dict(in_channels=[64, 128, 256], expansion=1.0,
              num_encoder_layers=2),
    bbox_head=dict(transformer=dict(num_layers=5)))
