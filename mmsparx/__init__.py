"""mmsparx: SparX, SpaRTAN and SparseSwin backbones for OpenMMLab.

``import mmsparx`` (what a config's ``custom_imports`` does) registers every
mmsparx model into the ``MODELS`` registry of each installed toolbox and
makes mmengine load checkpoints through the safe loader.

Imported before torch (as mmsparx's tools do), it also turns on PyTorch's
transparent-huge-page CPU allocations (``THP_MEM_ALLOC_ENABLE=1``) unless
the variable is set: torch reads it once, at its first allocation, so after
``import torch`` it must come from the environment. Without it every large
activation is a fresh mapping faulted in 4 KiB pages, and on the 2-core
machine that was 9 % of a SparX-Mamba-T training step.
"""
import os

os.environ.setdefault('THP_MEM_ALLOC_ENABLE', '1')

from .checkpoint import install_mmengine_loader  # noqa: E402
from .registry import (available_toolboxes, register_lazy_models,
                       register_model, register_models)
from .version import __version__
from .models import LAZY_MODEL_CLASSES, MODEL_CLASSES
from . import hooks  # noqa: F401  registers the runner hooks

install_mmengine_loader()
register_models(MODEL_CLASSES)
register_lazy_models(LAZY_MODEL_CLASSES)

__all__ = ['__version__', 'available_toolboxes', 'register_model',
           'register_models', 'MODEL_CLASSES']
