# Kept for the short path users type: the config lives in
# configs/spartan/mask-rcnn_spartan-t_fpn_1x_coco.py.
_base_ = ['./spartan/mask-rcnn_spartan-t_fpn_1x_coco.py']
custom_imports = dict(imports=['mmsparx'], allow_failed_imports=False)
