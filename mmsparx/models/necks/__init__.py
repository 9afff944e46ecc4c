"""Necks (mmdet only, registered lazily): RT-DETR's hybrid encoder."""
