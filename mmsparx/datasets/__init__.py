"""Generated datasets (COCO, ADE20K and ImageNet formats) for tests and
demos, checks of a config's data before launch, and ``CheckedCocoDataset``
(registered in mmdet's ``DATASETS``)."""
from mmsparx.datasets.generate import (generate_ade20k, generate_coco,
                                       generate_imagenet)

__all__ = ['generate_coco', 'generate_ade20k', 'generate_imagenet',
           'register_datasets']


def _build_checked_coco(*args, **kwargs):
    """Builds :class:`mmsparx.datasets.checked_coco.CheckedCocoDataset`,
    imported on first use: an mmseg or mmpretrain process that imports
    mmsparx does not pay for mmdet's datasets."""
    from mmsparx.datasets.checked_coco import CheckedCocoDataset
    return CheckedCocoDataset(*args, **kwargs)


def register_datasets() -> None:
    """Put ``CheckedCocoDataset`` into mmdet's ``DATASETS`` (when mmdet is
    installed); called by ``import mmsparx``."""
    try:
        from mmdet.registry import DATASETS
    except ImportError:
        return
    if 'CheckedCocoDataset' not in DATASETS.module_dict:
        DATASETS.register_module(name='CheckedCocoDataset',
                                 module=_build_checked_coco)
