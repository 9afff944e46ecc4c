# maskrcnn_sparx_small_fpn_shapes.py with the authors' detection DMCA: one
# learned softmax scale per ganglion layer (their code), initialised for
# 800x1333 inputs.
_base_ = ['./maskrcnn_sparx_small_fpn_shapes.py']

model = dict(backbone=dict(dmca_scale='learned'))
