# Table VIII ablation, ImageNet-1k: SpaRTAN-XT with
# depthwise convolutions in every stage (Table VIII D: 2.2 M, 0.57 G, 73.2).
# The published XT is the hybrid H ('F', 'F', 'D', 'D'; 2.2 M, 0.64 G,
# 73.9): configs/spartan/spartan-xt_16xb128_in1k.py, whose recipe this keeps.
# (The table's sizes are XT's, so the ablation derives from XT, not T.)
_base_ = ['../spartan-xt_16xb128_in1k.py']
custom_imports = dict(imports=['mmsparx'], allow_failed_imports=False)

model = dict(backbone=dict(arch=dict(
    _delete_=True,  # replaces the base config's arch name
    channels=(32, 64, 96, 192), depths=(3, 3, 10, 2),
    expand_ratios=(4, 4, 2, 2), conv_types=('D', 'D', 'D', 'D'))))
