"""Pretrained weights into an mmsparx backbone, whatever their layout.

A file that cannot fit is refused before anything is copied, in one
paragraph that names what the file holds (:mod:`.detect`) and the setting
that loads it; the full key lists go to the log only.
"""
from __future__ import annotations

import logging
import os.path as osp
import pickle
from typing import (Any, Callable, Dict, List, Mapping, NoReturn, Optional,
                    Tuple)

from torch import Tensor, nn

from mmsparx.converters.detect import (CheckpointInfo, describe_model,
                                       detect_checkpoint, family_mismatch,
                                       model_family, not_convertible,
                                       same_model, tensors_of, unknown_model,
                                       variant_mismatch)
from mmsparx.fileio import (UNSAFE_ENV, CheckpointError, DownloadError,
                            LoadReport, fit_problems, load_checkpoint_file,
                            load_state_dict, state_dict_of)

# What a damaged or foreign file makes torch.load raise.
_READ_ERRORS = (RuntimeError, EOFError, KeyError, ValueError,
                pickle.UnpicklingError)


def read_checkpoint_file(filename: str):
    """The unpickled file (a path or an http(s) URL, fetched once into
    the cache), read by the one safe loader.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file is truncated, not a torch checkpoint, or
            holds objects safe loading refuses (one line each); or, a
            :class:`DownloadError`, the URL could not be fetched.
    """
    try:
        return load_checkpoint_file(filename)
    except (FileNotFoundError, DownloadError):
        raise
    except _READ_ERRORS as err:
        raise CheckpointError(_read_failure(filename, err)) from err


def read_state_dict(filename: str) -> Dict[str, Tensor]:
    """The tensors of a checkpoint file (its ``state_dict`` / ``model``).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file is truncated, not a torch checkpoint,
            holds objects safe loading refuses, or holds no tensors.
    """
    checkpoint = read_checkpoint_file(filename)
    try:  # a state dict, one under the usual keys, or a pickled module
        state = tensors_of(state_dict_of(checkpoint))
    except TypeError as err:
        raise CheckpointError(
            f'checkpoint {filename} holds a {type(checkpoint).__name__}, not '
            'a state dict: save model.state_dict() (or a dict holding it '
            "under 'state_dict' / 'model').") from err
    if not state:
        raise CheckpointError(
            f'checkpoint {filename} holds no tensors (top-level keys: '
            f'{_first(list(checkpoint))}): give a model checkpoint.')
    return state


def _read_failure(filename: str, err: Exception) -> str:
    """A short reason for an unreadable file; the safe-loading refusal
    keeps its own message, which names the way to load a trusted file."""
    if UNSAFE_ENV in str(err):
        return str(err)
    cause = err.__cause__ or err
    first = str(cause).split('. ')[0].splitlines()[0] if str(cause) else ''
    reason = f'{type(cause).__name__}: {first}' if first else \
        type(cause).__name__
    return (f'checkpoint {filename} could not be read ({reason[:120]}): it '
            'is truncated (an interrupted download or save?) or not a torch '
            'checkpoint; download or save it again.')


def _first(items: List[str], count: int = 3) -> str:
    """'a, b, c, ...': the first few of a long list."""
    more = ', ...' if len(items) > count else ''
    return ', '.join(str(i) for i in items[:count]) + more


def summarize(report: LoadReport) -> str:
    """'3 keys missing (a, b, c, ...), 2 with a shape mismatch (file vs
    model: k (1, 2) vs (3, 4), ...)': a report in one short line."""
    parts = []
    if report.missing:
        parts.append(f'{len(report.missing)} keys missing '
                     f'({_first(report.missing)})')
    if report.mismatched:
        shapes = [f'{k} {a} vs {b}' for k, a, b in report.mismatched]
        parts.append(f'{len(shapes)} with a shape mismatch (file vs model: '
                     f'{_first(shapes, 1)})')
    if report.unexpected:
        parts.append(f'{len(report.unexpected)} unexpected '
                     f'({_first(report.unexpected, 2)})')
    return ', '.join(parts) or 'nothing wrong'


def split_prefix(state: Dict[str, Tensor], prefix: str
                 ) -> Tuple[Dict[str, Tensor], List[str]]:
    """(the keys under ``prefix``, without it; the other keys) when any key
    has the prefix (a full model), else (all keys, []) (a bare backbone).
    """
    if not any(k.startswith(prefix) for k in state):
        return state, []
    unused = sorted(k for k in state if not k.startswith(prefix))
    return {k[len(prefix):]: v for k, v in state.items()
            if k.startswith(prefix)}, unused


def check_family(filename: str, info: CheckpointInfo,
                 backbone: nn.Module) -> None:
    """Refuse a file of another known family by name (before converting:
    a converter would fail on the first key it has no rule for). A backbone
    that starts from another family's weights lists the families it reads
    in ``accepted_families`` (SparseSwin: its own and Swin-T)."""
    mine = model_family(backbone)
    accepted = getattr(backbone, 'accepted_families', (mine, ))
    if info.family is not None and mine is not None and \
            info.family not in accepted:
        raise CheckpointError(family_mismatch(filename, info, backbone))


def misfit(filename: str, info: CheckpointInfo, backbone: nn.Module,
           problems: LoadReport) -> str:
    """One paragraph on why a file of the right family does not fit."""
    model = describe_model(backbone)
    if info.family is not None and info.arch is not None and \
            model.arch is not None and not same_model(
                info.family, info.arch, model.arch):
        return variant_mismatch(filename, info, backbone)
    name = type(backbone).__name__
    if info.family is None:
        return (f'checkpoint {filename} does not fit {name}: '
                f'{unknown_model(info)}; give a {name} checkpoint. Found '
                f'{summarize(problems)}; the key lists are in the log.')
    return (f'checkpoint {filename} does not fit {name}: '
            f'{summarize(problems)}. Check the variant (arch) matches the '
            'checkpoint; the key lists are in the log.')


def require_fit(backbone: nn.Module, state: Dict[str, Tensor], source: str,
                info: CheckpointInfo, logger='current',
                may_be_missing: Optional[Callable[[str], bool]] = None
                ) -> None:
    """Raise :class:`CheckpointError` (another family by name, else why
    the file does not fit; the full key lists to the log) unless ``state``
    fills ``backbone``: every key but those it ``may_be_missing`` (by
    default the backbone's own rule), each at its shape. A backbone whose
    ``refuses_unexpected_keys`` is true refuses keys it lacks too (its
    ``prepare_pretrained`` already set aside the ones it knows); one with
    an ``explain_misfit(source, info, problems)`` words the reason."""
    from mmengine.logging import print_log
    if may_be_missing is None:
        may_be_missing = getattr(backbone, 'may_be_missing',
                                 lambda key: key.startswith('out_norms.'))
    problems = fit_problems(backbone, state, may_be_missing)
    if problems.missing or problems.mismatched or (
            problems.unexpected and
            getattr(backbone, 'refuses_unexpected_keys', False)):
        print_log(f'{type(backbone).__name__}: {source} does not fit: '
                  f'{problems.summary(limit=None)}', logger=logger,
                  level=logging.WARNING)
        check_family(source, info, backbone)
        explain = getattr(backbone, 'explain_misfit', None)
        raise CheckpointError(
            explain(source, info, problems) if explain is not None
            else misfit(source, info, backbone, problems))


def own_layout(backbone: nn.Module, state: Dict[str, Tensor],
               info: CheckpointInfo, prefix: str
               ) -> Tuple[Dict[str, Tensor], List[str],
                          Callable[[str], bool]]:
    """The usual way a file becomes a backbone's state: an authors'-layout
    file converted with the backbone's ``checkpoint_format()``, then the
    keys under ``prefix`` (or all keys of a bare backbone). Returns (state,
    the file's keys left unused, the keys the backbone may lack)."""
    convert, is_official = backbone.checkpoint_format()
    if is_official(state):
        state = convert(state)
    state, unused = split_prefix(state, prefix)
    return state, unused, backbone.may_be_missing


def load_backbone(backbone: nn.Module, filename: str,
                  prefix: str = 'backbone.', logger='current') -> LoadReport:
    """Load ``filename`` (a path, or an http(s) URL fetched once into the
    cache) into ``backbone`` and report every key: the one route
    ``init_cfg=dict(type='Pretrained', ...)`` takes for every family.

    The backbone turns the file into its state (``prepare_pretrained``,
    else :func:`own_layout`): an authors'-layout file is converted; keys
    under ``prefix`` (a full classifier/detector checkpoint) or, if there
    are none, all keys (a bare backbone) are used and the others (a
    classifier's head, a detector's neck) are reported as unused. Keys the
    backbone says may be missing (output norms, modules a classifier file
    cannot hold) are fine. A file of another family or variant, any other
    missing or mismatched key, and what the backbone's
    ``check_checkpoint`` refuses raise :class:`CheckpointError` before
    anything is copied, so a wrong checkpoint never loads half-way
    silently.
    """
    from mmengine.logging import print_log
    state = read_state_dict(filename)
    info = detect_checkpoint(state)
    check_family(filename, info, backbone)
    prepare = getattr(backbone, 'prepare_pretrained', None)
    state, unused, may_be_missing = (
        prepare(filename, state, info, prefix) if prepare is not None else
        own_layout(backbone, state, info, prefix))
    require_fit(backbone, state, filename, info, logger, may_be_missing)
    check = getattr(backbone, 'check_checkpoint', None)
    if check is not None:
        check(state)
    report = load_state_dict(backbone, state, strict=False, logger=logger)
    if unused:
        print_log(f'{type(backbone).__name__}: {len(unused)} keys of '
                  f'{filename} not used by the backbone (outside {prefix!r} '
                  f'or not in its layout): ' + ', '.join(unused),
                  logger=logger, level=logging.INFO)
    report.unused = unused
    return report


def rename_authors_keys(backbone: nn.Module, state: Dict[str, Tensor],
                        prefix: str) -> bool:
    """Rename in place the keys under ``prefix`` of a state dict being
    loaded into a model holding ``backbone`` there, when they are in the
    authors' layout (their whole-model COCO / ADE20K files), with the
    backbone's own converter (``checkpoint_format``); whether they were.

    A load state-dict pre-hook calls this, so every loader (mmengine's
    ``load_from``, torch's ``load_state_dict``) sees mmsparx keys. What
    :func:`load_backbone` refuses is refused here too, and the backbone's
    ``check_checkpoint(..., whole=True)`` has the last word: mmengine's
    loader would only warn about the keys such a file leaves unfilled.
    """
    from mmengine.logging import print_log
    convert, is_official = backbone.checkpoint_format()
    inner = {k[len(prefix):]: v for k, v in state.items()
             if k.startswith(prefix)}
    if not inner or not is_official(inner):
        return False
    source = f'(keys under {prefix!r})' if prefix else '(state dict)'
    try:
        converted = convert(inner)
    except KeyError as err:
        raise conversion_failed(source, err) from err
    own = {k[len('backbone.'):] if k.startswith('backbone.') else k: v
           for k, v in converted.items()}
    require_fit(backbone, own, source, detect_checkpoint(inner))
    backbone.check_checkpoint(own, whole=True)
    for key in [k for k in state if k.startswith(prefix)]:
        del state[key]
    state.update({prefix + k: v for k, v in own.items()})
    print_log(f'{type(backbone).__name__}: renamed the {len(own)} keys '
              f"under {prefix!r} from the authors' layout", logger='current',
              level=logging.INFO)
    return True


# -- for the converter tools ------------------------------------------------
def authors_classifier_state(model: nn.Module, state: Dict[str, Any]
                             ) -> Dict[str, Any]:
    """An authors' ImageNet file (their backbone's keys at the top level,
    the head as ``classifier.3``: ``sparx_mamba_tiny_in1k.pth``) in the
    keys of a model whose backbone reads that layout
    (``checkpoint_format``); any other file as it is. The authors' dense
    files hold ``backbone.*`` and their backbone renames those itself
    (``adapt_keys``)."""
    layout = getattr(getattr(model, 'backbone', None), 'checkpoint_format',
                     None)
    if not callable(layout) or any(k.startswith('backbone.') for k in state):
        return state
    try:
        convert, is_authors = layout()
    except NotImplementedError:
        return state
    tensors = {k: v for k, v in state.items() if isinstance(v, Tensor)}
    if not tensors or not is_authors(tensors):
        return state
    try:
        return convert(tensors)
    except (KeyError, ValueError):
        # An edited or truncated file: refused below as it is, by name.
        return state


def read_authors_file(src: str, family: str) -> Dict[str, Tensor]:
    """The state dict in ``src`` when it is the authors' layout of
    ``family`` (a :data:`.detect.FAMILIES` key); anything else is refused
    with what the file is and what to do with it."""
    state = read_state_dict(src)
    info = detect_checkpoint(state)
    if (info.family, info.layout) != (family, 'authors'):
        raise CheckpointError(not_convertible(src, info, family))
    return state


def check_paths(src: str, dst: str) -> None:
    """Refuse, before any work, what would make a conversion fail late or
    destroy its input."""
    if osp.abspath(src) == osp.abspath(dst):
        raise CheckpointError('refusing to overwrite the input checkpoint '
                              f'{src}; give another output path')
    if not osp.isfile(osp.expanduser(src)):
        raise CheckpointError(f'checkpoint {src} does not exist (or is not '
                              'a file): give the path of the file to '
                              'convert.')
    if osp.isdir(osp.expanduser(dst)):
        raise CheckpointError(f'cannot write {dst}: it is a folder; give '
                              'the path of the file to write.')


def load_strictly(model: nn.Module, state: Mapping[str, Tensor],
                  src: str) -> None:
    """The converters' final check: every key of ``model`` filled, nothing
    left over, shapes equal; else one paragraph (key lists to the log)."""
    problems = fit_problems(model, state)
    if not problems.ok:
        from mmengine.logging import print_log
        print_log(f'strict load into {type(model).__name__} failed: '
                  f'{problems.summary(limit=None)}', logger='current',
                  level=logging.WARNING)
        raise CheckpointError(
            f'the keys converted from {src} do not fit the '
            f'{type(model).__name__} built from its shapes: '
            f'{summarize(problems)}. The file is probably truncated or '
            'edited; the key lists are in the log.')
    load_state_dict(model, state, strict=True)


# Errors a converter tool reports in one paragraph instead of a traceback:
# unreadable, missing, wrong or unwritable files. Anything else is a bug.
CLI_ERRORS = (CheckpointError, OSError)


def exit_with(prog: str, err: BaseException) -> NoReturn:
    """Print ``err`` as one paragraph on stderr and exit with status 1."""
    import sys
    message = err.args[0] if isinstance(err, KeyError) and err.args else err
    print(f'{prog}: error: {message}', file=sys.stderr)
    sys.exit(1)


def conversion_failed(src: str, err: Exception) -> CheckpointError:
    """A converter's "no rule for key" / "not a ... state dict" (a file of
    the right layout that is truncated or edited) as one paragraph."""
    reason = err.args[0] if isinstance(err, KeyError) and err.args else err
    return CheckpointError(f'{src} could not be converted: {reason}. Is the '
                           'file complete (not truncated or edited)?')
