# Table 7 ablation, ImageNet-1k: SparX-Mamba-T with
# PlainNet: no ganglion layers, so no cross-layer
# connections; stages 3-4 widened to 384 and 576 for a comparable size.
# The T recipe: configs/sparx/sparx-mamba-t_16xb128_in1k.py.
_base_ = ['../sparx-mamba-t_16xb128_in1k.py']
custom_imports = dict(imports=['mmsparx'], allow_failed_imports=False)

arch = dict(
    _delete_=True,  # replaces the base config's arch name
    depths=(2, 2, 7, 2), channels=(96, 192, 384, 576), stem='v1',
    strides=(1, 1, 2, 1), ganglion_start=(None, None, None, None))
model = dict(backbone=dict(arch=arch), head=dict(in_channels=576))
