# Mask R-CNN with the small SparX-Mamba of the RT-DETR demo (depths 1-1-3-1,
# widths 48-96-192-288, SparX-Mamba-T's ganglion rule, 4.4 M parameters),
# from scratch on the generated shapes set: the recipe, data, FPN, heads and
# schedule of maskrcnn_r18_fpn_shapes.py, only the backbone differs
# (configs/demo/README.md: the comparison and the diagnosis). Output norm
# 'gn' (one GroupNorm over each whole map) instead of the authors' per-pixel
# LayerNorm: from scratch, the per-pixel norm blows the near-zero features of
# flat regions up to unit variance, and the RoI head learns nothing from
# that noise (maskrcnn_sparx_small_ln_fpn_shapes.py: bbox mAP 0.00x).
_base_ = ['./maskrcnn_r18_fpn_shapes.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='SparXMamba',
        arch=dict(depths=(1, 1, 3, 1), channels=(48, 96, 192, 288),
                  stem='v1', strides=(1, 1, 2, 1),
                  ganglion_start=(None, 1, 0, 0)),
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.0,
        out_norm='gn',
        dmca_scale='input',
        init_cfg=None),
    neck=dict(in_channels=[48, 96, 192, 288]))
