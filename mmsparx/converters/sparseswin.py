"""SparseSwin checkpoints in the authors' layout (and Swin-T files) -> mmsparx.

The authors' model is torchvision's Swin-T ``features[:6]``
as ``swin_model.{0..5}`` plus ``step4.*`` (the SparTa block), ``norm`` and
``fc_out``. mmsparx builds stages 1-3 from mmpretrain, so:

* ``swin_model.0.{0,2}`` -> ``patch_embed.{projection,norm}``;
  ``swin_model.{1,3,5}.j`` -> ``stages.{0,1,2}.blocks.j`` (``attn.*`` ->
  ``attn.w_msa.*``, ``mlp.{0,3}`` -> ``ffn.layers.{0.0,1}``, the relative
  position index (N*N,) -> (N, N));
* ``swin_model.{2,4}`` (patch merging) -> ``stages.{0,1}.downsample``, with
  the input channels reordered: torchvision concatenates the 2x2 neighbours
  as (0,0), (1,0), (0,1), (1,1) blocks of C channels; mmcv's ``nn.Unfold``
  takes each channel's four neighbours in a row, (0,0), (0,1), (1,0), (1,1);
* ``step4.convert_token.{convert,lin_t}`` -> ``sparta.converter.{conv,
  to_tokens}``; ``step4.{mha,mlp,norm1,norm2}.i`` -> ``sparta.layers.i.
  {attn (qkv, lin -> proj), mlp, norm1, norm2}``; ``fc_out`` -> ``head.fc``.

torchvision's Swin-T (``features.*``, what the authors start from) uses the
same rules for ``features.0..5``; its stage 4, norm and head are unused.
"""
from __future__ import annotations

import math
import re
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from mmsparx.archs.sparseswin import arch_from_authors, arch_name

from mmsparx.converters.detect import (CheckpointInfo, describe_model,
                                       detect_family, family_mismatch,
                                       refuse_other_family, register_reader,
                                       same_model, unknown_model)
from mmsparx.converters.loading import summarize
from mmsparx.fileio import CheckpointError, LoadReport

# (authors' block part, mmsparx block part)
_BLOCK_PARTS: List[Tuple[str, str]] = [
    ('norm1.', 'norm1.'), ('norm2.', 'norm2.'),
    ('attn.qkv.', 'attn.w_msa.qkv.'), ('attn.proj.', 'attn.w_msa.proj.'),
    ('attn.relative_position_bias_table',
     'attn.w_msa.relative_position_bias_table'),
    ('attn.relative_position_index', 'attn.w_msa.relative_position_index'),
    ('mlp.0.', 'ffn.layers.0.0.'), ('mlp.3.', 'ffn.layers.1.'),
]
# (authors' SparTa part, mmsparx part) under step4.<module>.<i>.
_SPARTA_PARTS: List[Tuple[str, str]] = [
    ('mha.{i}.qkv.', 'layers.{i}.attn.qkv.'),
    ('mha.{i}.lin.', 'layers.{i}.attn.proj.'),
    ('mlp.{i}.fc1.', 'layers.{i}.mlp.fc1.'),
    ('mlp.{i}.fc2.', 'layers.{i}.mlp.fc2.'),
    ('norm1.{i}.', 'layers.{i}.norm1.'), ('norm2.{i}.', 'layers.{i}.norm2.'),
]
_PREFIX_PARTS: List[Tuple[str, str]] = [
    ('step4.convert_token.convert.', 'backbone.sparta.converter.conv.'),
    ('step4.convert_token.lin_t.', 'backbone.sparta.converter.to_tokens.'),
    ('norm.', 'backbone.norm.'), ('fc_out.', 'head.fc.'),
]
# Modules only SparseSwinDense has: a classifier checkpoint lacks them and a
# dense checkpoint may carry them into a classifier backbone (unused there).
DENSE_ONLY = ('token_to_space.', 'out_norms.')
LAYOUTS = ('authors', 'torchvision', 'mmsparx', 'swin')


def merge_permutation(channels: int) -> Tensor:
    """Index ``p`` with ``mmsparx[..., j] = torchvision[..., p[j]]`` over the
    4C inputs of a patch merging of C channels."""
    j = torch.arange(4 * channels)
    c, k = j // 4, j % 4
    row, col = k // 2, k % 2
    return (row + 2 * col) * channels + c


def _merge_value(value: Tensor, to_ours: bool) -> Tensor:
    """Reorder the 4C inputs (last axis) of a patch merging's norm and
    reduction."""
    perm = merge_permutation(value.shape[-1] // 4)
    if not to_ours:
        perm = torch.argsort(perm)
    return value[..., perm].contiguous()


def _swin_key(index: int, rest: str, value: Tensor
              ) -> Optional[Tuple[str, Tensor]]:
    """torchvision ``features.<index>.<rest>`` -> (backbone key, value), or
    None for what SparseSwin does not have (Swin stage 4 and on)."""
    if index == 0:
        parts = {'0.': 'patch_embed.projection.', '2.': 'patch_embed.norm.'}
        for old, new in parts.items():
            if rest.startswith(old):
                return new + rest[len(old):], value
    elif index in (1, 3, 5):
        match = re.match(r'^(\d+)\.(.+)$', rest)
        if match:
            block, part = match.groups()
            for old, new in _BLOCK_PARTS:
                if part.startswith(old):
                    if old == 'attn.relative_position_index':
                        side = math.isqrt(value.numel())
                        value = value.reshape(side, side)
                    return (f'stages.{index // 2}.blocks.{block}.'
                            f'{new}{part[len(old):]}', value)
    elif index in (2, 4):
        if rest in ('reduction.weight', 'norm.weight', 'norm.bias'):
            return (f'stages.{index // 2 - 1}.downsample.{rest}',
                    _merge_value(value, to_ours=True))
    else:
        return None
    raise KeyError(f'SparseSwin converter: no rule for Swin key '
                   f'features/swin_model.{index}.{rest}')


def convert_sparseswin(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """The authors' state dict -> an mmsparx ``ImageClassifier`` state dict
    (``backbone.*`` for :class:`SparseSwin`, ``head.fc.*``). Another
    family's file raises :class:`CheckpointError` naming that family."""
    refuse_other_family(state_dict, 'SparseSwin')
    out: Dict[str, Tensor] = {}
    for key, value in _strip_module(state_dict).items():
        new = _official_key(key, value)
        if new is None:
            raise KeyError(f'SparseSwin converter: {key!r} is not part of '
                           'the authors\' SparseSwin (swin_model.0-5, '
                           'step4, norm, fc_out)')
        if new[0] in out:
            raise KeyError(f'two keys map to {new[0]!r}')
        out[new[0]] = new[1]
    return out


def _official_key(key: str, value: Tensor
                  ) -> Optional[Tuple[str, Tensor]]:
    match = re.match(r'^swin_model\.(\d+)\.(.+)$', key)
    if match:
        converted = _swin_key(int(match.group(1)), match.group(2), value)
        if converted is None:
            return None
        return 'backbone.' + converted[0], converted[1]
    for old, new in _PREFIX_PARTS:
        if key.startswith(old):
            return new + key[len(old):], value
    match = re.match(r'^step4\.(mha|mlp|norm1|norm2)\.(\d+)\.(.+)$', key)
    if match:
        module, index, rest = match.groups()
        for old, new in _SPARTA_PARTS:
            old = old.format(i=index)
            if f'{module}.{index}.{rest}'.startswith(old):
                tail = f'{module}.{index}.{rest}'[len(old):]
                return ('backbone.sparta.' + new.format(i=index) + tail,
                        value)
    return None


def to_official_layout(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """The inverse of :func:`convert_sparseswin`: an mmsparx SparseSwin
    classifier state dict -> the authors' keys and tensors, e.g. to run
    their evaluation code on weights trained here."""
    out: Dict[str, Tensor] = {}
    for key, value in state_dict.items():
        new = _mmsparx_to_official(key, value)
        if new is None:
            raise KeyError(f'{key!r} has no place in the authors\' layout '
                           '(only SparseSwin classifier keys do)')
        out[new[0]] = new[1]
    return out


def _mmsparx_to_official(key: str, value: Tensor
                         ) -> Optional[Tuple[str, Tensor]]:
    for old, new in _PREFIX_PARTS:
        if key.startswith(new):
            return old + key[len(new):], value
    if key.startswith('backbone.patch_embed.'):
        rest = key[len('backbone.patch_embed.'):]
        for new, old in (('projection.', '0.'), ('norm.', '2.')):
            if rest.startswith(new):
                return f'swin_model.0.{old}{rest[len(new):]}', value
    match = re.match(r'^backbone\.stages\.(\d+)\.downsample\.(.+)$', key)
    if match:
        stage, rest = int(match.group(1)), match.group(2)
        return (f'swin_model.{2 * stage + 2}.{rest}',
                _merge_value(value, to_ours=False))
    match = re.match(r'^backbone\.stages\.(\d+)\.blocks\.(\d+)\.(.+)$', key)
    if match:
        stage, block, part = match.groups()
        for old, new in _BLOCK_PARTS:
            if part.startswith(new):
                if new == 'attn.w_msa.relative_position_index':
                    value = value.reshape(-1)
                return (f'swin_model.{2 * int(stage) + 1}.{block}.'
                        f'{old}{part[len(new):]}', value)
    match = re.match(r'^backbone\.sparta\.layers\.(\d+)\.(.+)$', key)
    if match:
        index, rest = match.groups()
        for old, new in _SPARTA_PARTS:
            new = new.format(i=index)[len(f'layers.{index}.'):]
            if rest.startswith(new):
                return ('step4.' + old.format(i=index) + rest[len(new):],
                        value)
    return None


def convert_torchvision_swin(state_dict: Dict[str, Tensor]
                             ) -> Tuple[Dict[str, Tensor], List[str]]:
    """torchvision's Swin-T state dict -> (SparseSwin backbone keys for
    ``features.0..5``, the keys SparseSwin has no place for)."""
    out, unused = {}, []
    for key, value in _strip_module(state_dict).items():
        match = re.match(r'^features\.(\d+)\.(.+)$', key)
        converted = (_swin_key(int(match.group(1)), match.group(2), value)
                     if match else None)
        if converted is None:
            unused.append(key)
        else:
            out[converted[0]] = converted[1]
    return out, unused


def _strip_module(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Drop the ``module.`` that (Distributed)DataParallel adds."""
    if state_dict and all(k.startswith('module.') for k in state_dict):
        return {k[len('module.'):]: v for k, v in state_dict.items()}
    return dict(state_dict)


ACCEPTED = ('SparseSwin loads its own files, the authors\' (swin_model.*, '
            'step4.*), torchvision\'s Swin-T (features.*) and mmpretrain/'
            'mmdet Swin-T (patch_embed.projection.*, stages.*.attn.w_msa.*)')


def detect_layout(state_dict: Dict[str, Tensor]) -> str:
    """'authors', 'torchvision' (Swin-T), 'mmsparx' (SparseSwin) or 'swin'
    (mmpretrain / mmdet Swin); anything else (SparX's and SpaRTAN's
    ``stages.*`` included) raises."""
    family, layout = detect_family(state_dict)
    if family in ('SparseSwin', 'Swin'):
        return layout
    keys = ', '.join(list(_strip_module(state_dict))[:5])
    holds = f'it holds a {family} model; ' if family else ''
    raise ValueError(f'not a SparseSwin or Swin checkpoint ({holds}keys '
                     f'start {keys} ...). {ACCEPTED}.')


def official_view(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """The authors' keys of an mmsparx SparseSwin file (bare backbone or
    full model; dense-only modules left out), for :func:`infer_arch`."""
    state = _strip_module(state_dict)
    if not any(k.startswith('backbone.') for k in state):
        state = {'backbone.' + k: v for k, v in state.items()}
    out = {}
    for key, value in state.items():
        new = _mmsparx_to_official(key, value)
        if new is not None:
            out[new[0]] = new[1]
    return out


def _swin_unused(key: str) -> bool:
    """Keys of a Swin-T file that SparseSwin replaces or recomputes: stage 4
    and the merging into it, the output norms, the attention masks."""
    return bool(re.match(r'^(stages\.2\.downsample\.|stages\.[3-9]\.|'
                         r'norm\d*\.|absolute_pos_embed)', key)
                or 'attn_mask' in key)


def is_official_layout(state_dict: Dict[str, Tensor]) -> bool:
    """True for the authors' key names."""
    try:
        return detect_layout(state_dict) == 'authors'
    except ValueError:
        return False


def pretrained_state(
        backbone: nn.Module, filename: str, state: Dict[str, Tensor],
        info: CheckpointInfo, prefix: str
) -> Tuple[Dict[str, Tensor], List[str], Callable[[str], bool]]:
    """(state, unused keys, keys it may lack) for a :class:`SparseSwin` /
    :class:`SparseSwinDense` loading a file of any layout of
    :func:`detect_layout` (its ``prepare_pretrained`` for
    :func:`mmsparx.converters.loading.load_backbone`).

    A Swin-T file fills the patch embedding and stages 1-3 only (what the
    authors start from); a classifier file leaves the dense-only modules as
    initialised.
    """
    check_model_family(filename, info, backbone)
    state = _strip_module(state)
    layout = info.layout
    unused: List[str] = []
    if layout == 'authors':
        state = convert_sparseswin(state)
    elif layout == 'torchvision':
        state, unused = convert_torchvision_swin(state)
        state = {'backbone.' + k: v for k, v in state.items()}
    if any(k.startswith(prefix) for k in state):
        unused += [k for k in state if not k.startswith(prefix)]
        state = {k[len(prefix):]: v for k, v in state.items()
                 if k.startswith(prefix)}
    fresh = tuple(backbone.new_module_prefixes())
    if layout in ('torchvision', 'swin'):
        unused += [k for k in state if _swin_unused(k)]
        state = {k: v for k, v in state.items() if not _swin_unused(k)}
        fresh += ('sparta.', 'norm.')
    unused += [k for k in state if k.startswith(DENSE_ONLY)
               and k not in backbone.state_dict()]
    state = {k: v for k, v in state.items() if k not in unused}
    return state, unused, lambda key: key.startswith(fresh)


def check_model_family(filename: str, info: CheckpointInfo,
                       backbone: nn.Module) -> None:
    """Refuse a file of another family (SparX, SpaRTAN) or of none, by name.
    """
    if info.family in ('SparseSwin', 'Swin'):
        return
    if info.family is not None:
        raise CheckpointError(family_mismatch(filename, info, backbone))
    raise CheckpointError(
        f'checkpoint {filename} is not a SparseSwin or Swin checkpoint: '
        f'{unknown_model(info)}. {ACCEPTED}.')


def misfit_message(filename: str, info: CheckpointInfo, backbone: nn.Module,
                   problems: LoadReport) -> str:
    """One paragraph for a SparseSwin file that does not fit the backbone's
    arch / img_size (its ``explain_misfit``; the key lists are logged)."""
    name = type(backbone).__name__
    return (f'checkpoint {filename} ({info.layout} layout) does not fit '
            f'{name}: {summarize(problems)}. Check that arch and img_size '
            f'match the checkpoint{_variant_hint(info, backbone)} (the '
            f'spatial-to-token map is (tokens, H*W) of the stride-16 grid); '
            f'the key lists are in the log.')


def _variant_hint(info: CheckpointInfo, backbone: nn.Module) -> str:
    """': it is a SparseSwin-T checkpoint ...' when the file tells."""
    if info.arch is None:
        return ''
    img = tuple(info.kwargs.get('img_size', (224, 224)))
    mine = tuple(getattr(backbone, 'img_size', img))
    if same_model('SparseSwin', info.arch, backbone.arch) and img == mine:
        return ''
    return (f': it is a {info.label} checkpoint for {img[0]}x{img[1]} '
            f'inputs, the model a {describe_model(backbone).label} for '
            f'{mine[0]}x{mine[1]}; use {info.arch_setting()}, img_size='
            f'{img[0] if img[0] == img[1] else img}')


infer_arch = arch_from_authors  # (arch, img_size, num_classes) of a file


@register_reader('SparseSwin')
def _read(state: Dict[str, Tensor], layout: str
          ) -> Tuple[dict, Optional[str], dict]:
    if layout != 'authors':
        state = official_view(state)
    arch, img_size, _ = infer_arch(state)
    kwargs = {} if img_size == (224, 224) else {'img_size': img_size}
    return arch, arch_name(arch), kwargs
