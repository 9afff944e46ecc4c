"""Batch-level augmentations run by the data preprocessor (mmdet only,
registered lazily): RT-DETR's multi-scale resize."""
