# maskrcnn_sparx_small_fpn_shapes.py with the authors' dense output norm (a
# per-pixel LayerNorm2d on each output, as their COCO models): the run of the
# diagnosis in configs/demo/README.md that does not learn from scratch.
_base_ = ['./maskrcnn_sparx_small_fpn_shapes.py']

model = dict(backbone=dict(out_norm='ln'))
