# Kept for the short path users type: the config lives in
# configs/sparx/mask-rcnn_sparx-mamba-t_fpn_1x_coco.py.
_base_ = ['./sparx/mask-rcnn_sparx-mamba-t_fpn_1x_coco.py']
custom_imports = dict(imports=['mmsparx'], allow_failed_imports=False)
