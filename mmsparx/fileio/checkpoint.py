"""The one checkpoint loader: safe by default, loud about what it loaded.

torch >= 2.6 unpickles with ``weights_only=True``, which refuses the
numpy arrays and mmengine ``HistoryBuffer`` objects that every mmengine
checkpoint carries; mmengine 0.10.7 predates that, so its resume fails.
:func:`load_checkpoint_file` allow-lists exactly those types (no arbitrary
code runs) and :func:`install_mmengine_loader` makes mmengine's runner
(resume, ``load_from``, ``init_cfg=dict(type='Pretrained')``) use it.

Files that also hold foreign objects (an omegaconf ``DictConfig`` saved next
to the weights, a whole ``torch.save(model)``) are refused by torch's
weights-only unpickler. For those the loader falls back to the restricted
unpickler of :mod:`mmsparx.fileio.restricted_unpickle` (given the same allow-list),
which keeps the tensors, turns the foreign objects into inert placeholders
and runs no code from the file; this module decides when to use it and says
what was ignored or why a file was refused.
"""
from __future__ import annotations

import logging
import os
import os.path as osp
import pickle
import re
import struct
import zipfile
from dataclasses import dataclass, field
from typing import (Any, Callable, Dict, List, Mapping, Optional, Sequence,
                    Tuple)

import numpy as np
import torch
from torch import nn

from mmsparx.fileio.restricted_unpickle import (ForeignObject, _ForeignRecorder,
                                  _holds_tensor, _is_module, _module_weights,
                                  _restricted_pickle_module)

UNSAFE_ENV = 'MMSPARX_UNSAFE_LOAD'
# Lists longer than this are cut in ``str(LoadReport)`` and in messages.
REPORT_LIST_LIMIT = 10
_NAME_LIMIT = 8
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


def _name_list(names: Sequence[str], limit: int = _NAME_LIMIT) -> str:
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
    recorder = _ForeignRecorder(safe_getattr=_statistics_getattr)
    try:
        checkpoint = torch.load(filename, map_location=map_location,
                                weights_only=False,
                                pickle_module=_restricted_pickle_module(
                                    recorder, _safe_globals()))
    except Exception as err:  # noqa: BLE001  any failure: refuse, say why
        names = recorder.names or ([refused] if refused else [])
        if _is_unreadable(err):
            raise _unreadable(filename, err) from err
        raise RuntimeError(
            f'checkpoint {filename!r} holds objects that safe loading '
            f'refuses ({_name_list(names)}) and its tensors could not be '
            f'recovered without running their code ({type(err).__name__}: '
            f'{_plain(str(err)).splitlines()[0] if str(err) else ""}). '
            f'{_unsafe_fix()}') from err
    names = recorder.names
    if names and not _holds_tensor(checkpoint):
        raise RuntimeError(
            f'checkpoint {filename!r} holds objects that safe loading '
            f'refuses ({_name_list(names)}) and no tensors besides them. '
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
    filename = osp.expanduser(filename)
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
            f'{len(ignored)} foreign {plural} ({_name_list(ignored)}): '
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
        filename: path of a ``.pth`` / ``.pt`` file.
        map_location: as in :func:`torch.load`.
        weights_only: ``None`` means safe loading unless the environment
            variable ``MMSPARX_UNSAFE_LOAD=1`` says the file is trusted.

    Raises:
        FileNotFoundError: no such file.
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
    if _is_module(checkpoint):
        return _module_weights(checkpoint)
    if not isinstance(checkpoint, Mapping):
        raise TypeError(
            f'the checkpoint is a {_describe(checkpoint)}, not a state dict, '
            f'a dict holding one under state_dict/model/model_state/module, '
            f'or a pickled nn.Module; there are no weights to load from it.')
    for key in ('state_dict', 'model', 'model_state', 'module'):
        inner = checkpoint.get(key)
        if _is_module(inner):
            return _module_weights(inner)
        if isinstance(inner, Mapping):
            return dict(inner)
    return dict(checkpoint)


def _capped(items: Sequence[str], limit: Optional[int], note: str) -> str:
    if limit is None or len(items) <= limit:
        return ', '.join(items)
    return (', '.join(items[:limit])
            + f' ... and {len(items) - limit} more{note}')


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

    def _lists(self) -> List[Tuple[str, List[str]]]:
        """(title, entries) of every non-empty list but ``loaded``."""
        lists = [
            (f'missing in checkpoint ({len(self.missing)})', self.missing),
            (f'unexpected in checkpoint ({len(self.unexpected)})',
             self.unexpected),
            (f'shape mismatch, checkpoint vs model ({len(self.mismatched)})',
             [f'{k} {tuple(a)} vs {tuple(b)}'
              for k, a, b in self.mismatched]),
            (f'not used ({len(self.unused)})', self.unused)]
        return [(title, entries) for title, entries in lists if entries]

    def summary(self, limit: Optional[int] = REPORT_LIST_LIMIT,
                note: str = '') -> str:
        """One line; each list cut after ``limit`` entries (``None``: all)
        with ``note`` after the count of the rest, since a whole model's
        key list makes an unreadable 40,000-character message."""
        lines = [f'loaded {len(self.loaded)} keys']
        lines += [f'{title}: {_capped(entries, limit, note)}'
                  for title, entries in self._lists()]
        return '; '.join(lines)

    def __str__(self) -> str:
        return self.summary()


def _log_full_lists(report: LoadReport, name: str, logger, level: int) -> bool:
    """Log every list the summary cut; whether there was one."""
    from mmengine.logging import print_log
    cut = [(title, entries) for title, entries in report._lists()
           if len(entries) > REPORT_LIST_LIMIT]
    for title, entries in cut:
        print_log(f'{name}: {title}: {", ".join(entries)}', logger=logger,
                  level=level)
    return bool(cut)


def fit_problems(module: nn.Module, state: Mapping[str, torch.Tensor],
                 may_be_missing: Callable[[str], bool] = lambda key: False
                 ) -> LoadReport:
    """What loading ``state`` into ``module`` would meet, found without
    copying anything: missing keys (other than ``may_be_missing``),
    unexpected keys, keys of another shape."""
    own = module.state_dict()
    return LoadReport(
        missing=[k for k in own if k not in state and not may_be_missing(k)],
        unexpected=[k for k in state if k not in own],
        mismatched=[(k, tuple(v.shape), tuple(own[k].shape))
                    for k, v in state.items()
                    if k in own and tuple(v.shape) != tuple(own[k].shape)])


def adapt_keys(module: nn.Module, state: Mapping[str, torch.Tensor]
               ) -> Dict[str, torch.Tensor]:
    """``state`` with the keys renamed that submodules read in another
    layout (``adapt_loaded_keys``: the SparX-Mamba backbone reads its
    authors' keys), so the checks before copying see what torch's own
    load (which runs their pre-hooks) would see."""
    state = dict(state)
    for name, sub in module.named_modules():
        adapt = getattr(sub, 'adapt_loaded_keys', None)
        if callable(adapt):
            adapt(state, f'{name}.' if name else '')
    return state


def load_state_dict(module: nn.Module, state_dict: Mapping[str, torch.Tensor],
                    strict: bool = False, logger=None) -> LoadReport:
    """Copy ``state_dict`` into ``module`` and report every key's fate.

    Keys with a wrong shape are skipped (not a crash halfway through the
    copy). With ``strict=True`` any missing, unexpected or mismatched key
    raises before anything is copied. With a ``logger`` the report is logged
    and so are the full key lists its summary cuts. Keys in a layout a
    submodule reads (:func:`adapt_keys`) are renamed first.
    """
    state_dict = adapt_keys(module, state_dict)
    report = fit_problems(module, state_dict)
    unusable = set(report.unexpected) | {k for k, _, _ in report.mismatched}
    usable = {k: v for k, v in state_dict.items() if k not in unusable}
    name = type(module).__name__
    if strict and not report.ok:
        note = ' (pass logger= to log the full list)'
        if logger is not None and _log_full_lists(report, name, logger,
                                                  logging.ERROR):
            note = ' (full list in the log)'
        raise RuntimeError(f'strict load into {name} failed: '
                           f'{report.summary(note=note)}')
    module.load_state_dict(usable, strict=False)
    report.loaded = sorted(usable)
    if logger is not None:
        from mmengine.logging import print_log
        level = logging.INFO if report.ok else logging.WARNING
        print_log(f'{name}: {report.summary(note=" (full list in the log)")}',
                  logger=logger, level=level)
        _log_full_lists(report, name, logger, level)
    return report


def _mmengine_local_loader(filename: str, map_location=None) -> dict:
    checkpoint = load_checkpoint_file(filename, map_location=map_location)
    if _is_module(checkpoint):
        # mmengine wants a dict: a torch.save(model) file gives its weights.
        return {'state_dict': state_dict_of(checkpoint)}
    return checkpoint


def install_mmengine_loader() -> None:
    """Make mmengine's local-path checkpoint scheme use the safe loader."""
    from mmengine.runner.checkpoint import CheckpointLoader
    CheckpointLoader.register_scheme(prefixes='', force=True)(
        _mmengine_local_loader)


# -- whole-model loads: load_from, tools/test.py, resume ---------------------
PARTIAL_FLAG = '--partial-load'


def _optional_key(key: str) -> bool:
    """Model keys a whole-model file may lack: BN's batch counter (mmengine
    ignores it too; no layer's output depends on it)."""
    return key.endswith('num_batches_tracked')


def _loaded_view(checkpoint: Any, revise_keys: Sequence[Tuple[str, str]]
                 ) -> Dict[str, Any]:
    """The keys mmengine's ``_load_checkpoint_to_model`` copies from
    ``checkpoint``: its ``state_dict`` (or the whole dict), revised."""
    state = checkpoint.get('state_dict', checkpoint) \
        if isinstance(checkpoint, Mapping) else {}
    state = dict(state) if isinstance(state, Mapping) else {}
    for pattern, replacement in revise_keys:
        state = {re.sub(pattern, replacement, k): v for k, v in state.items()}
    return state


def _prefixes(keys: Sequence[str], limit: int = 4) -> str:
    """'backbone. 344, neck. 12, ...': the top-level parts of a file."""
    counts: Dict[str, int] = {}
    for key in keys:
        head = key.split('.', 1)[0] + ('.' if '.' in key else '')
        counts[head] = counts.get(head, 0) + 1
    parts = [f'{head} {n}' for head, n in
             sorted(counts.items(), key=lambda item: -item[1])]
    return ', '.join(parts[:limit]) + (', ...' if len(parts) > limit else '')


def _what_file_is(checkpoint: Any, state: Mapping[str, Any]) -> str:
    """'holds 529 tensors (backbone. 529), a SparX-Mamba-S model (mmsparx
    layout)': the file, as far as its keys tell."""
    from mmsparx.converters.detect import detect_checkpoint
    try:
        tensors = {k: v for k, v in state_dict_of(checkpoint).items()
                   if isinstance(v, torch.Tensor)}
    except TypeError:
        tensors = {}
    if not tensors:
        top = list(checkpoint)[:4] if isinstance(checkpoint, Mapping) else []
        return f'holds no tensors (top-level keys: {_name_list(top, 4)})'
    text = f'holds {len(tensors)} tensors ({_prefixes(list(tensors))})'
    if not any(isinstance(v, torch.Tensor) for v in state.values()):
        text += (', none where load_from reads (under state_dict or at the '
                 'top level)')
    info = detect_checkpoint(tensors)
    if info.family is not None:
        text += f', a {info.label} model ({info.layout} layout)'
    return text


def _fitting_fix(model: nn.Module, checkpoint: Any,
                 state: Mapping[str, Any], filename: str) -> str:
    """The setting, converter or file that fits, as far as the keys tell.
    """
    from mmsparx.converters.detect import (FAMILIES, describe_model,
                                           detect_checkpoint, model_family,
                                           same_model)
    try:
        info = detect_checkpoint(state_dict_of(checkpoint))
    except TypeError:
        info = detect_checkpoint({})
    converter = FAMILIES[info.family].converter if info.family else None
    authors = converter if info.layout == 'authors' else None
    backbone = getattr(model, 'backbone', None)
    if isinstance(backbone, nn.Module):
        rest = [k for k in model.state_dict() if not k.startswith('backbone.')]
        in_backbone = [k for k in state if k.startswith('backbone.')]
        if rest and not any(k in state for k in rest) and (
                in_backbone or info.family is not None):
            prefix = (' model.backbone.init_cfg.prefix=backbone.'
                      if in_backbone else '')
            first = f'convert it with {authors}, then ' if authors else ''
            return (f"It is a backbone's weights (an ImageNet classifier?), "
                    f'not a whole {type(model).__name__}: to train from it, '
                    f'{first}give it to the backbone, not as load_from '
                    f'(--cfg-options model.backbone.init_cfg.type=Pretrained '
                    f'model.backbone.init_cfg.checkpoint={filename}{prefix} '
                    f'load_from=None).')
        mine = model_family(backbone)
        own = describe_model(backbone)
        if mine is not None and info.family is not None and (
                mine != info.family or (
                    info.arch is not None and own.arch is not None
                    and not same_model(mine, info.arch, own.arch))):
            return (f"The config's backbone is {own.label}: use a config "
                    f'whose model.backbone has {info.config()}, or a '
                    f'{own.label} checkpoint of this config.')
    if authors:
        return f'Convert it with {authors} first.'
    return ('Give a checkpoint of this config (one tools/train.py wrote '
            "with it, or an authors' file converted with tools/model_converters/).")


def _write_back(checkpoint: dict, state: Dict[str, Any]) -> None:
    """Put renamed keys in place of the file's, keeping the version
    metadata torch's loaders read off the state dict."""
    from collections import OrderedDict
    renamed = OrderedDict(state)
    metadata = getattr(checkpoint['state_dict'], '_metadata', None)
    if metadata is not None:
        renamed._metadata = metadata
    checkpoint['state_dict'] = renamed


def require_whole_model(model: nn.Module, checkpoint: Any, filename: str,
                        partial: bool = False,
                        revise_keys: Sequence[Tuple[str, str]] = (
                            (r'^module\.', ''), )) -> LoadReport:
    """Refuse, before anything is copied, a file that leaves part of
    ``model`` unloaded; the policy of ``load_from``, ``tools/test.py``
    and resume.

    A whole-model load must fill every key of the model (parameters and
    persistent buffers, BN's ``num_batches_tracked`` excepted) at its
    shape: a detector half-filled by a wrong file trains or tests as a
    randomly initialised one and only mmengine's "do not match exactly"
    line says so. Keys of the file the model lacks are only logged (they
    leave nothing unloaded). ``partial`` (``--partial-load``: fine-tuning
    with a new head on purpose) loads what fits and logs the counts. Keys
    renamed from an authors' layout (:func:`adapt_keys`) are written back
    into ``checkpoint['state_dict']``, so the copy that follows does not
    convert them a second time.

    Raises:
        CheckpointError: one paragraph: what the file is, what is missing,
            what fits (the full key lists go to the log).
    """
    from mmengine.logging import print_log
    from mmsparx.converters.detect import CheckpointError
    from mmsparx.converters.loading import summarize
    view = _loaded_view(checkpoint, revise_keys)
    state = adapt_keys(model, view)
    if state.keys() != view.keys() and isinstance(checkpoint, dict) and \
            isinstance(checkpoint.get('state_dict'), Mapping):
        _write_back(checkpoint, state)
    report = fit_problems(model, state, _optional_key)
    needed = [k for k in model.state_dict() if not _optional_key(k)]
    unusable = set(report.unexpected) | {k for k, _, _ in report.mismatched}
    report.loaded = sorted(k for k in state if k not in unusable)
    filled = len(needed) - len(report.missing) - len(report.mismatched)
    name = type(model).__name__
    counts = (f'loaded {filled} of the model\'s {len(needed)} keys; '
              f'missing {len(report.missing)}, unexpected '
              f'{len(report.unexpected)}, mismatched '
              f'{len(report.mismatched)}')
    if not (report.missing or report.mismatched):
        print_log(f'checkpoint {filename} fills all {len(needed)} keys of '
                  f'the {name}', logger='current', level=logging.INFO)
        if report.unexpected:
            print_log(f'checkpoint {filename}: {len(report.unexpected)} keys '
                      f'the {name} does not have were not used: '
                      f'{_name_list(report.unexpected)}', logger='current',
                      level=logging.WARNING)
        return report
    if partial:
        print_log(f'{PARTIAL_FLAG}: checkpoint {filename} into {name}: '
                  f'{counts}.', logger='current', level=logging.WARNING)
        return report
    print_log(f'checkpoint {filename} does not fit {name}: '
              f'{report.summary(limit=None)}', logger='current',
              level=logging.WARNING)
    raise CheckpointError(
        f'checkpoint {filename} does not fit the {name} of this config: it '
        f'would fill {filled} of its {len(needed)} keys '
        f'({summarize(report)}). The file '
        f'{_what_file_is(checkpoint, state)}. '
        f'{_fitting_fix(model, checkpoint, state, filename)} Nothing was '
        f'loaded (the key lists are in the log); to load only what fits, '
        f'e.g. fine-tuning with a new head, add {PARTIAL_FLAG}.')


def _bare_model(model: nn.Module) -> nn.Module:
    """The model mmengine loads into: DDP and TTA wrappers taken off."""
    from mmengine.model import BaseTTAModel, is_model_wrapper
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    return model


def guard_runner_loading(runner, partial: bool = False) -> None:
    """Check every checkpoint ``runner`` loads (``load_from``,
    ``tools/test.py``, resume) with :func:`require_whole_model` before
    mmengine copies it, which would otherwise only warn.

    mmengine hands the loaded file to the ``after_load_checkpoint`` hooks
    before copying it; the file name comes from a thin wrapper around the
    runner's ``load_checkpoint``.
    """
    from mmengine.hooks import Hook

    class WholeModelLoadHook(Hook):
        filename: Optional[str] = None

        def after_load_checkpoint(self, runner, checkpoint) -> None:
            name = self.filename or runner._load_from or 'the checkpoint'
            require_whole_model(_bare_model(runner.model), checkpoint,
                                str(name), partial)

    hook = WholeModelLoadHook()
    runner.register_hook(hook, priority='VERY_HIGH')
    load = runner.load_checkpoint

    def load_checkpoint(filename, *args, **kwargs):
        hook.filename = filename
        try:
            return load(filename, *args, **kwargs)
        finally:
            hook.filename = None

    runner.load_checkpoint = load_checkpoint
