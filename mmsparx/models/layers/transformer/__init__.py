"""RT-DETR's transformer parts (need mmcv's ops): the AIFI encoder layer,
the deformable decoder, query selection, contrastive denoising, anchors."""
