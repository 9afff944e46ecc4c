# Mask R-CNN + FPN with SparX-Mamba-B, 1x: the T recipe
# (mask-rcnn_sparx-mamba-t_fpn_1x_coco.py) with the authors' drop path 0.45.
# Paper: 49.7 box AP / 44.3 mask AP.
_base_ = ['./mask-rcnn_sparx-mamba-t_fpn_1x_coco.py']
custom_imports = dict(imports=['mmsparx'], allow_failed_imports=False)

pretrained = 'checkpoints/sparx_mamba_b_in1k.pth'
model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.45,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[120, 240, 396, 636]))
