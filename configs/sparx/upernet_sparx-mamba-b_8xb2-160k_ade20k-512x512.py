# UperNet with SparX-Mamba-B on ADE20K, 160k: the T recipe
# (upernet_sparx-mamba-t_8xb2-160k_ade20k-512x512.py) with the authors' drop
# path 0.5. Paper: 52.3 mIoU single-scale, 53.4 multi-scale
# (the authors' retrained file: 52.5).
_base_ = ['./upernet_sparx-mamba-t_8xb2-160k_ade20k-512x512.py']
custom_imports = dict(imports=['mmsparx'], allow_failed_imports=False)

pretrained = 'checkpoints/sparx_mamba_b_in1k.pth'
model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.5,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[120, 240, 396, 636]),
    auxiliary_head=dict(in_channels=396))
