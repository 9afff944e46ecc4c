# Mask R-CNN with SparX-Mamba-T + FPN from scratch on the generated COCO-format
# shapes set (python -m mmsparx.datasets coco data/demo_coco), the full-size
# T (`make demo DEMO=maskrcnn` trains the small arch of
# maskrcnn_sparx_small_fpn_shapes.py, which fits the CPU budget). The recipe
# of maskrcnn_r18_fpn_shapes.py (same data, heads, CPU budget) with the
# backbone of configs/sparx/mask-rcnn_sparx-mamba-t_fpn_1x_coco.py; no
# ImageNet weights (nothing is downloaded), so a lower drop-path rate for a
# small set, and the whole-map GroupNorm on the outputs: from scratch, the
# authors' per-pixel LayerNorm leaves the RoI head nothing to learn from
# (configs/demo/README.md).
_base_ = ['./maskrcnn_r18_fpn_shapes.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='SparXMamba',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        out_norm='gn',
        init_cfg=None),
    neck=dict(in_channels=[96, 192, 320, 512]))
optim_wrapper = dict(paramwise_cfg=dict(norm_decay_mult=0.0, custom_keys={
    '.A_logs': dict(decay_mult=0.0),
    '.Ds': dict(decay_mult=0.0),
}))
