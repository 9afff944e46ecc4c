# SpaRTAN-XT on ImageNet-1k at 256 (paper: 2.2 M params, 0.83 GFLOPs,
# 74.4 top-1): the 256 recipe of spartan-t_16xb128_in1k-256px.py (trained
# and evaluated at 256) with XT's backbone and head, as at 224.
_base_ = ['./spartan-t_16xb128_in1k-256px.py']
custom_imports = dict(imports=['mmsparx'], allow_failed_imports=False)

model = dict(backbone=dict(arch='xt'), head=dict(in_channels=192))
