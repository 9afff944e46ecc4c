# Mask R-CNN with SpaRTAN-XT, from scratch: the recipe, data, FPN, heads and
# schedule of maskrcnn_r18_fpn_shapes.py; its BatchNorms train as R18's do,
# and its outputs take the whole-map GroupNorm of the small SparX (the
# per-pixel LayerNorm fails from scratch: configs/demo/README.md).
_base_ = ['./maskrcnn_r18_fpn_shapes.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='SpaRTAN',
        arch='xt',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.0,
        out_norm='gn',
        init_cfg=None),
    neck=dict(in_channels=[32, 64, 96, 192]))
