# Table 7 ablation, ImageNet-1k: SparX-Mamba-T with
# window M = 2: a ganglion layer reads the last 2 ganglion outputs
# (S = 2).
# The T recipe: configs/sparx/sparx-mamba-t_16xb128_in1k.py.
_base_ = ['../sparx-mamba-t_16xb128_in1k.py']
custom_imports = dict(imports=['mmsparx'], allow_failed_imports=False)

arch = dict(
    _delete_=True,  # replaces the base config's arch name
    depths=(2, 2, 7, 2), channels=(96, 192, 320, 512), stem='v1',
    strides=(1, 1, 2, 1), ganglion_start=(None, 1, 0, 0),
    window=2)
model = dict(backbone=dict(arch=arch), head=dict(in_channels=512))
