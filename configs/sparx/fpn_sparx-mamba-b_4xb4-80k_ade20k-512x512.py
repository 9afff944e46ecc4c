# Semantic FPN with SparX-Mamba-B on ADE20K, 80k: the T recipe
# (fpn_sparx-mamba-t_4xb4-80k_ade20k-512x512.py) with drop path 0.5 (the
# authors' UperNet value; no public S-FPN config). Paper: 51.9 mIoU.
_base_ = ['./fpn_sparx-mamba-t_4xb4-80k_ade20k-512x512.py']
custom_imports = dict(imports=['mmsparx'], allow_failed_imports=False)

pretrained = 'checkpoints/sparx_mamba_b_in1k.pth'
model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.5,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[120, 240, 396, 636]))
