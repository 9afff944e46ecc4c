# Mask R-CNN with a Swin of the small SparX's size (mmdet's SwinTransformer,
# depths 1-1-3-1, widths 48-384, window 7), from scratch: the recipe, data,
# FPN, heads and schedule of maskrcnn_r18_fpn_shapes.py.
_base_ = ['./maskrcnn_r18_fpn_shapes.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='SwinTransformer',
        embed_dims=48,
        depths=(1, 1, 3, 1),
        num_heads=(3, 6, 12, 24),
        window_size=7,
        drop_path_rate=0.0,
        out_indices=(0, 1, 2, 3),
        init_cfg=None),
    neck=dict(in_channels=[48, 96, 192, 384]))
