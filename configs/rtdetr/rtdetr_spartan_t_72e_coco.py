# RT-DETR with SpaRTAN-T on COCO (SpaRTAN paper, Table III: 50.0 AP, 21.5 M,
# 75.9 GFLOPs, 70 epochs): the SpaRTAN-XT config's encoder/decoder setting
# (expansion 1.0, two AIFI layers, 5 decoder layers; README.md) with the T
# backbone (64, 128, 256 channels at strides 8, 16, 32).
_base_ = ['./rtdetr_spartan_xt_72e_coco.py']
model = dict(
    backbone=dict(
        arch='t',
        init_cfg=dict(type='Pretrained',
                      checkpoint='checkpoints/spartan_t_in1k.pth')),
    neck=dict(in_channels=[64, 128, 256]))
