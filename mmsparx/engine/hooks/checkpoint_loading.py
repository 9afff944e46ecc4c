"""The runner's loading rules: every checkpoint it loads as a whole model
(``load_from``, ``tools/test.py``, resume) must fill the whole model, or it
is refused before mmengine copies it (mmengine itself would only warn and
go on with a half-random model)."""
from __future__ import annotations

import logging
import re
from collections import OrderedDict
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import BaseTTAModel, is_model_wrapper
from torch import nn

from mmsparx.converters.detect import (FAMILIES, describe_model,
                                       detect_checkpoint, model_family,
                                       same_model)
from mmsparx.converters.loading import (authors_classifier_state,
                                        summarize)
from mmsparx.fileio import (CheckpointError, LoadReport, adapt_keys,
                            fit_problems, name_list, state_dict_of)

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
    try:
        tensors = {k: v for k, v in state_dict_of(checkpoint).items()
                   if isinstance(v, torch.Tensor)}
    except TypeError:
        tensors = {}
    if not tensors:
        top = list(checkpoint)[:4] if isinstance(checkpoint, Mapping) else []
        return f'holds no tensors (top-level keys: {name_list(top, 4)})'
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
            "with it, or an authors' file converted with "
            'tools/model_converters/).')


def _write_back(checkpoint: dict, state: Dict[str, Any]) -> None:
    """Put renamed keys in place of the file's, keeping the version
    metadata torch's loaders read off the state dict. A bare state dict
    (the authors' ImageNet files) gets them under ``state_dict``, where
    mmengine's loader and its EMA hook read; what else it holds stays."""
    inner = checkpoint.get('state_dict')
    renamed = OrderedDict(state)
    metadata = getattr(inner if isinstance(inner, Mapping) else checkpoint,
                       '_metadata', None)
    if metadata is not None:
        renamed._metadata = metadata
    if not isinstance(inner, Mapping):
        rest = {k: v for k, v in checkpoint.items()
                if not isinstance(v, torch.Tensor) and k not in state}
        checkpoint.clear()
        checkpoint.update(rest)
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
    with a new head on purpose) loads what fits and logs the counts. An
    authors' file is converted (their ImageNet classifier files by
    :func:`~mmsparx.converters.loading.authors_classifier_state`, their
    dense files by :func:`adapt_keys`)
    and, once it is accepted, its renamed keys are written back into
    ``checkpoint['state_dict']``, so the copy that follows loads them as
    they are.

    Raises:
        CheckpointError: one paragraph: what the file is, what is missing,
            what fits (the full key lists go to the log).
    """
    view = _loaded_view(checkpoint, revise_keys)
    converted = authors_classifier_state(model, view)
    state = adapt_keys(model, converted)
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
    if (partial or not (report.missing or report.mismatched)) and \
            state.keys() != view.keys() and isinstance(checkpoint, dict):
        _write_back(checkpoint, state)
    if not (report.missing or report.mismatched):
        print_log(f'checkpoint {filename} fills all {len(needed)} keys of '
                  f'the {name}', logger='current', level=logging.INFO)
        if report.unexpected:
            print_log(f'checkpoint {filename}: {len(report.unexpected)} keys '
                      f'the {name} does not have were not used: '
                      f'{name_list(report.unexpected)}', logger='current',
                      level=logging.WARNING)
        return report
    if partial:
        print_log(f'{PARTIAL_FLAG}: checkpoint {filename} into {name}: '
                  f'{counts}.', logger='current', level=logging.WARNING)
        return report
    print_log(f'checkpoint {filename} does not fit {name}: '
              f'{report.summary(limit=None)}', logger='current',
              level=logging.WARNING)
    if converted is not view:  # say what the file holds, not the attempt
        state = adapt_keys(model, view)
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
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    return model


class WholeModelLoadHook(Hook):
    """Checks the file mmengine hands to ``after_load_checkpoint`` (before
    it copies it) with :func:`require_whole_model`. Registered by
    :func:`guard_runner_loading`, which also tells it the file name."""

    def __init__(self, partial: bool = False) -> None:
        self.partial = partial
        self.filename: Optional[str] = None

    def after_load_checkpoint(self, runner, checkpoint) -> None:
        name = self.filename or runner._load_from or 'the checkpoint'
        require_whole_model(_bare_model(runner.model), checkpoint, str(name),
                            self.partial)


def guard_runner_loading(runner, partial: bool = False) -> None:
    """Check every checkpoint ``runner`` loads (``load_from``,
    ``tools/test.py``, resume) with :func:`require_whole_model` before
    mmengine copies it, which would otherwise only warn.

    mmengine hands the loaded file to the ``after_load_checkpoint`` hooks
    before copying it; the file name comes from a thin wrapper around the
    runner's ``load_checkpoint``.
    """
    hook = WholeModelLoadHook(partial)
    runner.register_hook(hook, priority='VERY_HIGH')
    load = runner.load_checkpoint

    def load_checkpoint(filename, *args, **kwargs):
        hook.filename = filename
        try:
            return load(filename, *args, **kwargs)
        finally:
            hook.filename = None

    runner.load_checkpoint = load_checkpoint
