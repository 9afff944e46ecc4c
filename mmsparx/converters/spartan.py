"""The authors' SpaRTAN checkpoints -> mmsparx keys.

The authors' model is one timm-style classifier: ``conv.{0,1}`` (stem), a
flat ``layers`` Sequential where blocks and 2x2 downsamples are interleaved
(T: blocks 0-2, downsample 3, blocks 4-6, downsample 7, blocks 8-19,
downsample 20, blocks 21-22) and ``linear`` (head); files are
``{epoch, config, model, optim, sched, scaler}``. Inside a block the names
are mmsparx's too, so only the indices move:

    conv.{i}.*                 -> backbone.stem.{i}.*
    layers.{k}.* (block)       -> backbone.stages.{s}.blocks.{j}.*
    layers.{k}.* (downsample)  -> backbone.downsamples.{s}.*
    linear.*                   -> head.fc.*   (mmpretrain LinearClsHead)

The stage of each ``layers.{k}`` is read from the file itself (a downsample
is the entry with a ``conv.weight``), so any depths convert, and
:func:`infer_arch` recovers the architecture from the tensor shapes.
"""
from __future__ import annotations

import re
from typing import Dict, Mapping, Optional, Tuple

from torch import Tensor

from mmsparx.archs.spartan import arch_from_state, arch_name

from mmsparx.converters.detect import (is_layout, refuse_other_family,
                                       register_reader)

_BLOCK_PARTS = r'(smixer|cmixer|norm_1|norm_2|scale_1|scale_2)'


def is_spartan_layout(state_dict: Mapping[str, Tensor]) -> bool:
    """True for the authors' key names (with or without ``backbone.``):
    ``conv.{0,1}``, ``layers.{k}.scale_1`` ...; SparX-Mamba's authors'
    ``layers.{i}.blocks.{j}`` are not."""
    return is_layout(state_dict, 'SpaRTAN', 'authors')


def unwrap(checkpoint: Mapping) -> Dict[str, Tensor]:
    """The state dict inside an authors' ``{'model': ...}`` file (or an
    mmengine ``{'state_dict': ...}`` one); a plain state dict as it is."""
    from mmsparx.fileio import state_dict_of
    return state_dict_of(checkpoint)


def layer_plan(keys) -> Dict[int, Tuple[str, int, int]]:
    """``{k: ('block', stage, index) | ('downsample', stage, 0)}`` for the
    ``layers.{k}`` entries among ``keys`` (authors' names, no prefix).

    Raises:
        ValueError: the entries are not one stem-fed stage followed by three
            (downsample, blocks) stages, i.e. not a SpaRTAN ``layers``.
    """
    kinds: Dict[int, str] = {}
    for key in keys:
        match = re.match(rf'^layers\.(\d+)\.({_BLOCK_PARTS}|conv|norm)\.?',
                         key)
        if not match:
            continue
        kind = 'block' if match.group(3) else 'downsample'
        index = int(match.group(1))
        if kinds.setdefault(index, kind) != kind:
            raise ValueError(f'layers.{index} holds both block and '
                             'downsample keys; not an authors\' SpaRTAN file')
    if not kinds:
        raise ValueError('no layers.{k} keys: not an authors\' SpaRTAN file')
    indices = sorted(kinds)
    if indices != list(range(len(indices))):
        missing = sorted(set(range(indices[-1] + 1)) - set(indices))
        raise ValueError(f'layers.{missing} are missing: the checkpoint is '
                         'truncated or not an authors\' SpaRTAN file')
    plan: Dict[int, Tuple[str, int, int]] = {}
    stage, block = 0, 0
    for index in indices:
        if kinds[index] == 'downsample':
            if block == 0:
                raise ValueError(f'layers.{index} is a downsample with no '
                                 'block before it; not a SpaRTAN layout')
            stage, block = stage + 1, 0
            plan[index] = ('downsample', stage, 0)
        else:
            plan[index] = ('block', stage, block)
            block += 1
    if stage != 3 or block == 0:
        raise ValueError(f'found {stage + 1} stages in layers.*; SpaRTAN has '
                         '4 (three downsamples, each followed by blocks)')
    return plan


def _backbone_key(key: str, plan: Dict[int, Tuple[str, int, int]]) -> str:
    match = re.match(r'^conv\.([01])\.(.+)$', key)
    if match:
        return f'stem.{match.group(1)}.{match.group(2)}'
    match = re.match(r'^layers\.(\d+)\.(.+)$', key)
    if match:
        kind, stage, block = plan[int(match.group(1))]
        if kind == 'downsample':
            return f'downsamples.{stage}.{match.group(2)}'
        return f'stages.{stage}.blocks.{block}.{match.group(2)}'
    raise KeyError(f'SpaRTAN converter: no rule for backbone key {key!r}; is '
                   'this an authors\' SpaRTAN checkpoint?')


def convert_spartan(checkpoint: Mapping) -> Dict[str, Tensor]:
    """Authors' checkpoint or state dict -> mmsparx full-model state dict.

    Backbone keys go under ``backbone.``, ``linear.*`` becomes
    ``head.fc.*``; keys of a detector outside its backbone (``neck.*``,
    ``decoder.*`` ...) are kept as they are. Another family's file raises
    :class:`CheckpointError` naming that family.
    """
    state = unwrap(checkpoint)
    refuse_other_family(state, 'SpaRTAN')
    bare = [k[len('backbone.'):] if k.startswith('backbone.') else k
            for k in state]
    plan = layer_plan(bare)
    out: Dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith('linear.'):
            new = 'head.fc.' + key[len('linear.'):]
        elif key.startswith('backbone.'):
            new = 'backbone.' + _backbone_key(key[len('backbone.'):], plan)
        elif re.match(r'^(conv|layers)\.', key):
            new = 'backbone.' + _backbone_key(key, plan)
        else:
            new = key
        if new in out:
            raise KeyError(f'SpaRTAN converter: two keys map to {new!r}')
        out[new] = value
    return out


def infer_arch(checkpoint: Mapping) -> dict:
    """The ``SpaRTAN`` arch dict (channels, depths, expand_ratios,
    conv_types) that an authors' or mmsparx state dict was made with."""
    state = unwrap(checkpoint)
    state = {k[len('backbone.'):]: v for k, v in state.items()
             if k.startswith('backbone.')} or state
    if is_spartan_layout(state):
        state = {k[len('backbone.'):]: v for k, v in
                 convert_spartan(state).items() if k.startswith('backbone.')}
    return arch_from_state(state)


@register_reader('SpaRTAN')
def _read(state: Dict[str, Tensor], layout: str
          ) -> Tuple[dict, Optional[str], dict]:
    arch = infer_arch(state)
    return arch, arch_name(arch), {}
