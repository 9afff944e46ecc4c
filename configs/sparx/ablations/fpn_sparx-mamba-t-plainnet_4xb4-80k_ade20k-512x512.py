# Table 7 ablation, ADE20K (Semantic FPN 80k): SparX-Mamba-T with
# PlainNet: no ganglion layers, so no cross-layer
# connections; stages 3-4 widened to 384 and 576 for a comparable size.
# The T recipe (configs/sparx/fpn_sparx-mamba-t_4xb4-80k_ade20k-512x512.py),
# started from the matching ImageNet ablation.
_base_ = ['../fpn_sparx-mamba-t_4xb4-80k_ade20k-512x512.py']
custom_imports = dict(imports=['mmsparx'], allow_failed_imports=False)

pretrained = 'checkpoints/sparx_mamba_t_plainnet_in1k.pth'
arch = dict(
    _delete_=True,  # replaces the base config's arch name
    depths=(2, 2, 7, 2), channels=(96, 192, 384, 576), stem='v1',
    strides=(1, 1, 2, 1), ganglion_start=(None, None, None, None))
model = dict(
    backbone=dict(
        arch=arch, init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 576]))
