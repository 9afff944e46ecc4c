"""mmsparx: SparX, SpaRTAN and SparseSwin backbones for OpenMMLab.

``import mmsparx`` (what a config's ``custom_imports`` does) registers every
mmsparx model into the ``MODELS`` registry of each installed toolbox and
makes mmengine load checkpoints through the safe loader.

It also keeps the C heap's freed memory for reuse (see
:mod:`mmsparx.utils.malloc`): set ``MMSPARX_MALLOC_TUNING=0`` to leave glibc's
defaults.
"""
from mmsparx.utils.malloc import keep_freed_memory

keep_freed_memory()

from mmsparx.fileio import install_mmengine_loader  # noqa: E402
from mmsparx.registry import (available_toolboxes, register_lazy_models,
                              register_model, register_models)
from mmsparx.version import __version__
from mmsparx.models import LAZY_MODEL_CLASSES, MODEL_CLASSES
from mmsparx import engine  # noqa: F401  registers the hooks and loops
from mmsparx.datasets import register_datasets  # noqa: E402

install_mmengine_loader()
register_models(MODEL_CLASSES)
register_lazy_models(LAZY_MODEL_CLASSES)
register_datasets()  # CheckedCocoDataset, see README "Data checks"

__all__ = ['__version__', 'available_toolboxes', 'register_model',
           'register_models', 'MODEL_CLASSES']
