# Semantic FPN with SparX-Mamba-S on ADE20K, 80k: the T recipe
# (fpn_sparx-mamba-t_4xb4-80k_ade20k-512x512.py) with drop path 0.4 (the
# authors' UperNet value; no public S-FPN config). Paper: 50.5 mIoU.
_base_ = ['./fpn_sparx-mamba-t_4xb4-80k_ade20k-512x512.py']
custom_imports = dict(imports=['mmsparx'], allow_failed_imports=False)

pretrained = 'checkpoints/sparx_mamba_s_in1k.pth'
model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 328, 544]))
