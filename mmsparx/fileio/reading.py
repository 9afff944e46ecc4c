"""Reading checkpoint files: safe by default, loud about what was ignored.

torch >= 2.6 unpickles with ``weights_only=True``, which refuses the
numpy arrays and mmengine ``HistoryBuffer`` objects that every mmengine
checkpoint carries; mmengine 0.10.7 predates that, so its resume fails.
:func:`load_checkpoint_file` allow-lists exactly those types (no arbitrary
code runs) and :func:`install_mmengine_loader` makes mmengine's runner
(resume, ``load_from``, ``init_cfg=dict(type='Pretrained')``) use it. An
http(s) URL is downloaded once into the cache (:mod:`.download`) and its
copy read the same way.

Files that also hold foreign objects (an omegaconf ``DictConfig`` saved next
to the weights, a whole ``torch.save(model)``) are refused by torch's
weights-only unpickler. For those the loader falls back to the restricted
unpickler of :mod:`mmsparx.fileio.restricted_unpickle` (given the same
allow-list),
which keeps the tensors, turns the foreign objects into inert placeholders
and runs no code from the file; this module decides when to use it and says
what was ignored or why a file was refused. Fitting what was read to a model
is :mod:`mmsparx.fileio.fitting`'s job.
"""
from __future__ import annotations

import logging
import os
import os.path as osp
import pickle
import re
import struct
import zipfile
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from mmsparx.fileio.download import local_copy
from mmsparx.fileio.restricted_unpickle import (ForeignObject,
                                                ForeignRecorder, holds_tensor,
                                                is_module, module_weights,
                                                restricted_pickle_module)

UNSAFE_ENV = 'MMSPARX_UNSAFE_LOAD'
NAME_LIMIT = 8
_ANSI_ESCAPE = re.compile(r'\x1b\[[0-9;?]*[ -/]*[@-~]')


def _statistics_getattr(obj, name: str):
    from mmengine.logging.history_buffer import HistoryBuffer
    if obj is HistoryBuffer and name in ('min', 'max', 'current', 'mean'):
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f'getattr({obj!r}, {name!r}) is not allowed in a safe load')


def _safe_globals() -> list:
    """Types found in ordinary mmengine / timm / torchvision checkpoints."""
    types_: list = [np.ndarray, np.dtype]
    reconstruct = np.zeros(1).__reduce__()[0]
    scalar = np.float64(0).__reduce__()[0]
    # numpy 1 pickles these as numpy.core.*, numpy 2 as numpy._core.*:
    # accept both names so checkpoints move between the two.
    for func in (reconstruct, scalar):
        for package in ('numpy.core', 'numpy._core'):
            types_.append((func, f'{package}.multiarray.{func.__name__}'))
    types_ += [type(np.dtype(t)) for t in (
        'float16', 'float32', 'float64', 'int8', 'int16', 'int32', 'int64',
        'uint8', 'bool')]
    try:
        from mmengine.logging.history_buffer import HistoryBuffer
        types_.append(HistoryBuffer)
        # HistoryBuffer pickles its statistics as getattr(HistoryBuffer,
        # 'mean') etc.; serve that name with a getattr that allows only those.
        types_.append((_statistics_getattr, 'builtins.getattr'))
    except ImportError:
        pass
    try:
        from mmengine.config import ConfigDict
        types_.append(ConfigDict)
    except ImportError:
        pass
    return types_


def _plain(text: str) -> str:
    """Error text without the ANSI colour codes torch puts in it."""
    return _ANSI_ESCAPE.sub('', text)


def _refused_global(err: BaseException) -> Optional[str]:
    text = _plain(str(err))
    for pattern in (r'GLOBAL (\S+) was not an allowed global',
                    r'GLOBAL (\S+) whose module \S+ is blocked'):
        found = re.search(pattern, text)
        if found:
            return found.group(1)
    return None


def name_list(names: Sequence[str], limit: int = NAME_LIMIT) -> str:
    text = ', '.join(names[:limit])
    if len(names) > limit:
        text += f' and {len(names) - limit} more'
    return text


def _unsafe_fix() -> str:
    return (f'If you trust the file, set {UNSAFE_ENV}=1 (or pass '
            f'weights_only=False) to load it anyway; that imports and runs '
            f'the code of those classes, so their packages must be '
            f'installed.')


def _is_unreadable(err: BaseException) -> bool:
    """A damaged or non-torch file, as opposed to a refused object."""
    return isinstance(err, (EOFError, pickle.UnpicklingError)) or (
        isinstance(err, RuntimeError) and 'PytorchStreamReader' in str(err))


def _unreadable(filename: str, err: BaseException) -> RuntimeError:
    if osp.getsize(filename) == 0:
        why = 'the file is empty'
    else:
        why = _plain(str(err)) or type(err).__name__
    return RuntimeError(
        f'checkpoint {filename!r} could not be read ({why}); it is not a '
        f'torch checkpoint or it is truncated.')


def _weights_only_forced() -> bool:
    # torch then refuses any pickle_module: respect the user's choice.
    return os.environ.get('TORCH_FORCE_WEIGHTS_ONLY_LOAD', '0').lower() in (
        '1', 'y', 'yes', 'true')


def _is_torchscript(filename: str) -> bool:
    # torch.load hands such an archive to torch.jit.load whatever the
    # pickle_module; the weights-only pass refuses it before we get here,
    # this keeps the fallback safe on its own.
    if not zipfile.is_zipfile(filename):
        return False
    with zipfile.ZipFile(filename) as archive:
        return any(name.split('/', 1)[-1] == 'constants.pkl'
                   for name in archive.namelist())


def _load_foreign(filename: str, map_location,
                  refused: Optional[str]) -> Tuple[Any, List[str]]:
    """The restricted fallback; raises with the refused names when the file
    cannot be used without running code."""
    if _is_torchscript(filename):
        raise RuntimeError(
            f'checkpoint {filename!r} is a TorchScript archive: load it '
            f'with torch.jit.load if you trust it.')
    recorder = ForeignRecorder(safe_getattr=_statistics_getattr)
    try:
        checkpoint = torch.load(filename, map_location=map_location,
                                weights_only=False,
                                pickle_module=restricted_pickle_module(
                                    recorder, _safe_globals()))
    except Exception as err:  # noqa: BLE001  any failure: refuse, say why
        names = recorder.names or ([refused] if refused else [])
        if _is_unreadable(err):
            raise _unreadable(filename, err) from err
        raise RuntimeError(
            f'checkpoint {filename!r} holds objects that safe loading '
            f'refuses ({name_list(names)}) and its tensors could not be '
            f'recovered without running their code ({type(err).__name__}: '
            f'{_plain(str(err)).splitlines()[0] if str(err) else ""}). '
            f'{_unsafe_fix()}') from err
    names = recorder.names
    if names and not holds_tensor(checkpoint):
        raise RuntimeError(
            f'checkpoint {filename!r} holds objects that safe loading '
            f'refuses ({name_list(names)}) and no tensors besides them. '
            f'{_unsafe_fix()}')
    return checkpoint, names


def _load_trusted(filename: str, map_location) -> Any:
    try:
        return torch.load(filename, map_location=map_location,
                          weights_only=False)
    except (ImportError, AttributeError) as err:
        raise RuntimeError(
            f'checkpoint {filename!r} was loaded as trusted ({UNSAFE_ENV}=1 '
            f'or weights_only=False) but needs code that is not installed '
            f'({err}). Install it, or load without {UNSAFE_ENV} to keep the '
            f'tensors and skip those objects.') from err


def load_checkpoint_with_ignored(
        filename: str, map_location='cpu',
        weights_only: Optional[bool] = None) -> Tuple[Any, List[str]]:
    """Load a checkpoint file without executing code from it; also return
    the dotted names of the foreign classes/functions that were ignored.

    Files torch's weights-only unpickler accepts (with :func:`_safe_globals`)
    load exactly as torch loads them. A file it refuses is read again by a
    restricted unpickler: foreign objects become :class:`ForeignObject`
    placeholders, their names are returned and logged (warning) and the
    tensors are kept. See :func:`load_checkpoint_file` for the arguments.
    """
    filename = osp.expanduser(local_copy(filename))
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint {filename!r} does not exist.')
    if weights_only is None:
        weights_only = os.environ.get(UNSAFE_ENV, '0') != '1'
    if not weights_only:
        return _load_trusted(filename, map_location), []
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(filename, map_location=map_location,
                              weights_only=True), []
    except pickle.UnpicklingError as err:
        refused = _refused_global(err)
        if _weights_only_forced():
            raise RuntimeError(
                f'checkpoint {filename!r} holds objects that safe loading '
                f'refuses ({refused or _plain(str(err)).splitlines()[0]}) '
                f'and TORCH_FORCE_WEIGHTS_ONLY_LOAD forbids reading them as '
                f'placeholders. {_unsafe_fix()}') from err
    except (RuntimeError, EOFError, IndexError, ValueError, KeyError,
            struct.error) as err:
        # torch's weights-only unpickler meets a damaged pickle with any of
        # these (a cut legacy file: IndexError), not only UnpicklingError.
        raise _unreadable(filename, err) from err
    checkpoint, ignored = _load_foreign(filename, map_location, refused)
    if ignored:
        from mmengine.logging import print_log
        plural = 'class/function' if len(ignored) == 1 else 'classes/functions'
        print_log(
            f'checkpoint {filename!r}: ignored the objects of '
            f'{len(ignored)} foreign {plural} ({name_list(ignored)}): '
            f'their tensors were kept, no code ran. Set {UNSAFE_ENV}=1 only '
            f'for a trusted file whose objects you need.', logger='current',
            level=logging.WARNING)
    return checkpoint, ignored


def load_checkpoint_file(filename: str, map_location='cpu',
                         weights_only: Optional[bool] = None) -> Any:
    """Load a checkpoint file without executing code from it.

    Foreign objects in the file (a saved omegaconf config, a whole pickled
    ``nn.Module``) come back as inert :class:`ForeignObject` placeholders;
    :func:`load_checkpoint_with_ignored` also returns their names.

    Args:
        filename: path of a ``.pth`` / ``.pt`` file, or its http(s) URL
            (downloaded once into the cache: :mod:`.download`).
        map_location: as in :func:`torch.load`.
        weights_only: ``None`` means safe loading unless the environment
            variable ``MMSPARX_UNSAFE_LOAD=1`` says the file is trusted.

    Raises:
        FileNotFoundError: no such file.
        DownloadError: the URL could not be fetched (one paragraph with
            the way to do without the network).
        RuntimeError: the file is unreadable, or holds objects outside the
            safe list and no tensors could be recovered without running
            code; the message names them and how to load a trusted file.
    """
    return load_checkpoint_with_ignored(filename, map_location,
                                        weights_only)[0]


def _describe(obj: Any) -> str:
    if isinstance(obj, ForeignObject):
        return f'ignored foreign object {obj.foreign_name}'
    return f'{type(obj).__module__}.{type(obj).__qualname__}'


def state_dict_of(checkpoint: Any) -> Dict[str, torch.Tensor]:
    """The tensors of a checkpoint saved as a state dict, wrapped in one of
    the usual keys (``state_dict`` by mmengine, ``model`` by timm-style code)
    or saved as a whole module (``torch.save(model)``, loaded trusted or as
    placeholders).

    Raises:
        TypeError: the checkpoint is none of these.
    """
    if is_module(checkpoint):
        return module_weights(checkpoint)
    if not isinstance(checkpoint, Mapping):
        raise TypeError(
            f'the checkpoint is a {_describe(checkpoint)}, not a state dict, '
            f'a dict holding one under state_dict/model/model_state/module, '
            f'or a pickled nn.Module; there are no weights to load from it.')
    for key in ('state_dict', 'model', 'model_state', 'module'):
        inner = checkpoint.get(key)
        if is_module(inner):
            return module_weights(inner)
        if isinstance(inner, Mapping):
            return dict(inner)
    return dict(checkpoint)


def _mmengine_local_loader(filename: str, map_location=None) -> dict:
    checkpoint = load_checkpoint_file(filename, map_location=map_location)
    if is_module(checkpoint):
        # mmengine wants a dict: a torch.save(model) file gives its weights.
        return {'state_dict': state_dict_of(checkpoint)}
    return checkpoint


def _mmengine_url_loader(filename: str, map_location=None) -> dict:
    return _mmengine_local_loader(local_copy(filename), map_location)


def install_mmengine_loader() -> None:
    """Make mmengine's local-path checkpoint scheme use the safe loader,
    and its http(s) scheme (``load_from='https://...'``, a Pretrained
    ``init_cfg`` of an mmengine module) the cached download before it."""
    from mmengine.runner.checkpoint import CheckpointLoader
    CheckpointLoader.register_scheme(prefixes='', force=True)(
        _mmengine_local_loader)
    CheckpointLoader.register_scheme(prefixes=('http://', 'https://'),
                                     force=True)(_mmengine_url_loader)
