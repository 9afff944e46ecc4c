# UperNet with SparX-Mamba-S on ADE20K, 160k: the T recipe
# (upernet_sparx-mamba-t_8xb2-160k_ade20k-512x512.py) with the authors' drop
# path 0.4. Paper: 51.3 mIoU single-scale, 52.5 multi-scale
# (the authors' retrained file: 51.4).
_base_ = ['./upernet_sparx-mamba-t_8xb2-160k_ade20k-512x512.py']
custom_imports = dict(imports=['mmsparx'], allow_failed_imports=False)

pretrained = 'checkpoints/sparx_mamba_s_in1k.pth'
model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[96, 192, 328, 544]),
    auxiliary_head=dict(in_channels=328))
