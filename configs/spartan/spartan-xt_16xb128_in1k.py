# SpaRTAN-XT on ImageNet-1k at 224 (paper: 2.2 M params, 0.64 GFLOPs, 73.9
# top-1). At 256 (74.4): spartan-xt_16xb128_in1k-256px.py.
_base_ = ['../_base_/spartan_in1k.py']
custom_imports = dict(imports=['mmsparx'], allow_failed_imports=False)

model = dict(backbone=dict(arch='xt'), head=dict(in_channels=192))
