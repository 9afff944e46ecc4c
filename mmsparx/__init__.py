"""mmsparx: SparX, SpaRTAN and SparseSwin backbones for OpenMMLab.

``import mmsparx`` (what a config's ``custom_imports`` does) registers every
mmsparx model into the ``MODELS`` registry of each installed toolbox and
makes mmengine load checkpoints through the safe loader.

It also keeps the C heap's freed memory for reuse (see
:mod:`mmsparx.utils.malloc`): set ``MMSPARX_MALLOC_TUNING=0`` to leave glibc's
defaults.

torch and mmengine out of the range mmsparx works with stop the import
with one line that names the fix (:mod:`mmsparx.utils.versions`); an
installed toolbox that is too old is left out with one warning line.
"""
from mmsparx.utils.versions import (outdated_toolboxes,
                                    require_core_versions)

require_core_versions()  # before any module touches a newer torch API

from mmsparx.registry import skip_toolboxes  # noqa: E402

skip_toolboxes(outdated_toolboxes())  # before anything registers

from mmsparx.utils.malloc import keep_freed_memory  # noqa: E402

keep_freed_memory()

from mmsparx.fileio import install_mmengine_loader  # noqa: E402
from mmsparx.registry import (available_toolboxes,  # noqa: E402
                              register_lazy_models, register_model,
                              register_models)
from mmsparx.version import __version__  # noqa: E402
from mmsparx.models import LAZY_MODEL_CLASSES, MODEL_CLASSES  # noqa: E402
from mmsparx import engine  # noqa: F401,E402  registers hooks and loops
from mmsparx.datasets import register_datasets  # noqa: E402

install_mmengine_loader()
register_models(MODEL_CLASSES)
register_lazy_models(LAZY_MODEL_CLASSES)
register_datasets()  # CheckedCocoDataset, see README "Data checks"

__all__ = ['__version__', 'available_toolboxes', 'register_model',
           'register_models', 'MODEL_CLASSES']
