# maskrcnn_sparx_small_fpn_shapes.py with mmdet's SGD recipe in place of
# AdamW (momentum 0.9, weight decay 1e-4, lr 0.02 for this 4-image batch:
# from scratch on a small set, the higher end of mmdet's 0.02 x batch / 16).
_base_ = ['./maskrcnn_sparx_small_fpn_shapes.py']

optim_wrapper = dict(
    _delete_=True, type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=1e-4),
    clip_grad=dict(max_norm=10.0))
