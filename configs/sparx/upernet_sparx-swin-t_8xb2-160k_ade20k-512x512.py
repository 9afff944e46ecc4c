# UperNet with SparX-Swin-T on ADE20K, 160k (paper Table 9): the
# SparX-Mamba-T recipe (upernet_sparx-mamba-t_8xb2-160k_ade20k-512x512.py)
# with the Swin token mixer. Paper: 45.5 mIoU. No code or weights were
# published: the drop path 0.2 is a guess; ImageNet weights come from
# configs/sparx/sparx-swin-t_16xb128_in1k.py.
_base_ = ['./upernet_sparx-mamba-t_8xb2-160k_ade20k-512x512.py']
custom_imports = dict(imports=['mmsparx'], allow_failed_imports=False)

pretrained = 'checkpoints/sparx_swin_t_in1k.pth'
model = dict(
    backbone=dict(
        type='SparXSwin',
        arch='tiny',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[96, 192, 320, 576]),
    auxiliary_head=dict(in_channels=320))
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={
    '.relative_position_bias_table': dict(decay_mult=0.0)}))
