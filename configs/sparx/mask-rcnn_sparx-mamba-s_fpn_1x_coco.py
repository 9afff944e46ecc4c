# Mask R-CNN + FPN with SparX-Mamba-S, 1x: the T recipe
# (mask-rcnn_sparx-mamba-t_fpn_1x_coco.py) with the authors' drop path 0.3.
# Paper: 49.4 box AP / 44.1 mask AP.
_base_ = ['./mask-rcnn_sparx-mamba-t_fpn_1x_coco.py']
custom_imports = dict(imports=['mmsparx'], allow_failed_imports=False)

pretrained = 'checkpoints/sparx_mamba_s_in1k.pth'
model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 328, 544]))
