# Mask R-CNN + FPN with SparX-Swin-B (paper Table 9), ms-crop-3x: the
# SparX-Mamba-T recipe (mask-rcnn_sparx-mamba-t_fpn_ms-crop-3x_coco.py) with the
# Swin token mixer. Paper: 49.1 box AP / 43.7 mask AP. No code or weights
# were published: the drop path 0.5 is a guess, and DMCA's scale is learned as
# in the authors' SparX-Mamba detector; ImageNet weights come from
# configs/sparx/sparx-swin-b_16xb128_in1k.py.
_base_ = ['./mask-rcnn_sparx-mamba-t_fpn_ms-crop-3x_coco.py']
custom_imports = dict(imports=['mmsparx'], allow_failed_imports=False)

pretrained = 'checkpoints/sparx_swin_b_in1k.pth'
model = dict(
    backbone=dict(
        type='SparXSwin',
        arch='base',
        drop_path_rate=0.5,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[120, 240, 396, 616]))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={
    '.relative_position_bias_table': dict(decay_mult=0.0)}))
