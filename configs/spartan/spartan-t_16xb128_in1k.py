# SpaRTAN-T on ImageNet-1k at 224 (paper: 3.8 M params, 0.83 GFLOPs, 77.1
# top-1). At 256 (77.7): spartan-t_16xb128_in1k-256px.py.
_base_ = ['../_base_/spartan_in1k.py']
custom_imports = dict(imports=['mmsparx'], allow_failed_imports=False)

model = dict(backbone=dict(arch='t'), head=dict(in_channels=256))
