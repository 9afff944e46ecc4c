# Table 7 ablation, ADE20K (Semantic FPN 80k): SparX-Mamba-T with
# stride S = 3: ganglion layers 0, 3, 6 of stage 3 (M = 3).
# The T recipe (configs/sparx/fpn_sparx-mamba-t_4xb4-80k_ade20k-512x512.py),
# started from the matching ImageNet ablation.
_base_ = ['../fpn_sparx-mamba-t_4xb4-80k_ade20k-512x512.py']
custom_imports = dict(imports=['mmsparx'], allow_failed_imports=False)

pretrained = 'checkpoints/sparx_mamba_t_s3_in1k.pth'
arch = dict(
    _delete_=True,  # replaces the base config's arch name
    depths=(2, 2, 7, 2), channels=(96, 192, 320, 512), stem='v1',
    strides=(1, 1, 3, 1), ganglion_start=(None, 1, 0, 0))
model = dict(
    backbone=dict(
        arch=arch, init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 320, 512]))
