"""The one checkpoint loader: safe by default, loud about what it loaded.

torch >= 2.6 unpickles with ``weights_only=True``, which refuses the
numpy arrays and mmengine ``HistoryBuffer`` objects that every mmengine
checkpoint carries; mmengine 0.10.7 predates that, so its resume fails.
:func:`load_checkpoint_file` allow-lists exactly those types (no arbitrary
code runs) and :func:`install_mmengine_loader` makes mmengine's runner
(resume, ``load_from``, ``init_cfg=dict(type='Pretrained')``) use it.
"""
from __future__ import annotations

import os
import os.path as osp
import pickle
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch
from torch import nn

UNSAFE_ENV = 'MMSPARX_UNSAFE_LOAD'


def _statistics_getattr(obj, name: str):
    from mmengine.logging.history_buffer import HistoryBuffer
    if obj is HistoryBuffer and name in ('min', 'max', 'current', 'mean'):
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f'getattr({obj!r}, {name!r}) is not allowed in a safe load')


def _safe_globals() -> list:
    """Types found in ordinary mmengine / timm / torchvision checkpoints."""
    types: list = [np.ndarray, np.dtype]
    reconstruct = np.zeros(1).__reduce__()[0]
    scalar = np.float64(0).__reduce__()[0]
    # numpy 1 pickles these as numpy.core.*, numpy 2 as numpy._core.*:
    # accept both names so checkpoints move between the two.
    for func in (reconstruct, scalar):
        for package in ('numpy.core', 'numpy._core'):
            types.append((func, f'{package}.multiarray.{func.__name__}'))
    types += [type(np.dtype(t)) for t in (
        'float16', 'float32', 'float64', 'int8', 'int16', 'int32', 'int64',
        'uint8', 'bool')]
    try:
        from mmengine.logging.history_buffer import HistoryBuffer
        types.append(HistoryBuffer)
        # HistoryBuffer pickles its statistics as getattr(HistoryBuffer,
        # 'mean') etc.; serve that name with a getattr that allows only those.
        types.append((_statistics_getattr, 'builtins.getattr'))
    except ImportError:
        pass
    try:
        from mmengine.config import ConfigDict
        types.append(ConfigDict)
    except ImportError:
        pass
    return types


def load_checkpoint_file(filename: str, map_location='cpu',
                         weights_only: Optional[bool] = None) -> dict:
    """Load a checkpoint file without executing code from it.

    Args:
        filename: path of a ``.pth`` / ``.pt`` file.
        map_location: as in :func:`torch.load`.
        weights_only: ``None`` means safe loading unless the environment
            variable ``MMSPARX_UNSAFE_LOAD=1`` says the file is trusted.

    Raises:
        FileNotFoundError: no such file.
        RuntimeError: the file holds objects outside the safe list; the
            message names them and how to load a trusted file anyway.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint {filename!r} does not exist.')
    if weights_only is None:
        weights_only = os.environ.get(UNSAFE_ENV, '0') != '1'
    if not weights_only:
        return torch.load(filename, map_location=map_location,
                          weights_only=False)
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(filename, map_location=map_location,
                              weights_only=True)
    except pickle.UnpicklingError as err:
        raise RuntimeError(
            f'checkpoint {filename!r} holds objects that safe loading '
            f'refuses ({str(err).splitlines()[0]}). If you trust the file, '
            f'set {UNSAFE_ENV}=1 (or pass weights_only=False) to load it '
            f'anyway.') from err
    except (RuntimeError, EOFError) as err:
        raise RuntimeError(
            f'checkpoint {filename!r} could not be read ({err}); it is not a '
            f'torch checkpoint or it is truncated.') from err


def state_dict_of(checkpoint: Mapping) -> Dict[str, torch.Tensor]:
    """The tensors of a checkpoint saved as a state dict or wrapped in one of
    the usual keys (``state_dict`` by mmengine, ``model`` by timm-style code).
    """
    for key in ('state_dict', 'model', 'model_state', 'module'):
        inner = checkpoint.get(key)
        if isinstance(inner, Mapping):
            return dict(inner)
    return dict(checkpoint)


@dataclass
class LoadReport:
    """What :func:`load_state_dict` did with each key."""
    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[Tuple[str, tuple, tuple]] = field(default_factory=list)
    # Keys of the file outside the part that was loaded (a classifier's
    # head under a backbone): reported, not an error.
    unused: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        lines = [f'loaded {len(self.loaded)} keys']
        if self.missing:
            lines.append(f'missing in checkpoint ({len(self.missing)}): '
                         + ', '.join(self.missing))
        if self.unexpected:
            lines.append(f'unexpected in checkpoint ({len(self.unexpected)}): '
                         + ', '.join(self.unexpected))
        if self.mismatched:
            lines.append('shape mismatch (checkpoint vs model): ' + ', '.join(
                f'{k} {tuple(a)} vs {tuple(b)}' for k, a, b in self.mismatched))
        if self.unused:
            lines.append(f'not used ({len(self.unused)}): '
                         + ', '.join(self.unused))
        return '; '.join(lines)


def load_state_dict(module: nn.Module, state_dict: Mapping[str, torch.Tensor],
                    strict: bool = False, logger=None) -> LoadReport:
    """Copy ``state_dict`` into ``module`` and report every key's fate.

    Keys with a wrong shape are skipped (not a crash halfway through the
    copy). With ``strict=True`` any missing, unexpected or mismatched key
    raises before anything is copied.
    """
    own = module.state_dict()
    report = LoadReport()
    usable = {}
    for key, value in state_dict.items():
        if key not in own:
            report.unexpected.append(key)
        elif tuple(value.shape) != tuple(own[key].shape):
            report.mismatched.append((key, tuple(value.shape),
                                      tuple(own[key].shape)))
        else:
            usable[key] = value
    report.missing = [k for k in own if k not in state_dict]
    if strict and not report.ok:
        raise RuntimeError(
            f'strict load into {type(module).__name__} failed: {report}')
    module.load_state_dict(usable, strict=False)
    report.loaded = sorted(usable)
    if logger is not None:
        from mmengine.logging import print_log
        print_log(f'{type(module).__name__}: {report}', logger=logger,
                  level=20 if report.ok else 30)
    return report


def _mmengine_local_loader(filename: str, map_location=None) -> dict:
    return load_checkpoint_file(filename, map_location=map_location)


def install_mmengine_loader() -> None:
    """Make mmengine's local-path checkpoint scheme use the safe loader."""
    from mmengine.runner.checkpoint import CheckpointLoader
    CheckpointLoader.register_scheme(prefixes='', force=True)(
        _mmengine_local_loader)
