"""Detection heads (mmdet only, registered lazily): RT-DETR's head."""
