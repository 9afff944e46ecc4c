# Mask R-CNN + FPN with SparX-Mamba-B, 3x multi-scale crop: the T recipe
# (mask-rcnn_sparx-mamba-t_fpn_ms-crop-3x_coco.py) with the authors' drop
# path 0.45. Paper: 51.8 box AP / 45.8 mask AP.
_base_ = ['./mask-rcnn_sparx-mamba-t_fpn_ms-crop-3x_coco.py']
custom_imports = dict(imports=['mmsparx'], allow_failed_imports=False)

pretrained = 'checkpoints/sparx_mamba_b_in1k.pth'
model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.45,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[120, 240, 396, 636]))
