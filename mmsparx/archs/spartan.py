"""SpaRTAN variants as data (Table I) and the arch-dict checks: read
by the backbone (what to build) and the converter (what a file holds)."""
from __future__ import annotations

import copy
from typing import Any, Dict, Mapping, Optional, Union

from mmsparx.archs.common import lookup, named_variant

CONV_TYPES = ('F', 'D')  # Table VIII: full / depthwise, chosen per stage

# Table I as data. conv_types: Table VIII's per-stage full ('F') or
# depthwise ('D') convs; the published models are the hybrid F, F, D, D.
ARCH_SETTINGS: Dict[str, dict] = {
    'xt': dict(channels=(32, 64, 96, 192), depths=(3, 3, 10, 2),
               expand_ratios=(4, 4, 2, 2)),
    't': dict(channels=(32, 64, 128, 256), depths=(3, 3, 12, 2),
              expand_ratios=(4, 4, 2, 2)),
}
ALIASES = {'xtiny': 'xt', 'x-tiny': 'xt', 'tiny': 't'}
# The public code: GELU in the stem and the mixers, SiLU in the 2x2
# downsamples (Table VI ablates both; the paper's text says SiLU for all
# patch embeddings).
ARCH_DEFAULTS = dict(conv_types=('F', 'F', 'D', 'D'), stem_act='GELU',
                     downsample_act='SiLU', block_act='GELU',
                     layer_scale_init=1e-5)
REQUIRED_KEYS = ('channels', 'depths', 'expand_ratios')
PER_STAGE_KEYS = ('channels', 'depths', 'expand_ratios', 'conv_types')


def resolve_arch(arch: Union[str, dict]) -> dict:
    """A named variant or a custom dict, checked, with defaults filled."""
    arch = lookup(arch, ARCH_SETTINGS, ALIASES, REQUIRED_KEYS, 'SpaRTAN')
    unknown = sorted(set(arch) - set(REQUIRED_KEYS) - set(ARCH_DEFAULTS))
    if unknown:
        raise KeyError(f'SpaRTAN: unknown arch keys {unknown}; known: '
                       f'{sorted(REQUIRED_KEYS + tuple(ARCH_DEFAULTS))}')
    merged = dict(copy.deepcopy(ARCH_DEFAULTS), **arch)
    for key in PER_STAGE_KEYS:
        merged[key] = tuple(merged[key])
        if len(merged[key]) != 4:
            raise ValueError(f'SpaRTAN: arch[{key!r}] needs 4 entries (one '
                             f'per stage), got {merged[key]}')
    bad = [c for c in merged['conv_types'] if c not in CONV_TYPES]
    if bad:
        raise ValueError(f"SpaRTAN: conv_types take 'F' (full) or 'D' "
                         f"(depthwise) per stage, got {merged['conv_types']}"
                         " (Table VIII's H is ('F', 'F', 'D', 'D'))")
    odd = [c for c in merged['channels'] if c % 2 or c < 8]
    if odd:
        raise ValueError(f'SpaRTAN: channels must be even and >= 8 (SMixer '
                         f'halves C, its SE quarters that), got {odd}')
    return merged


def arch_from_state(state: Mapping[str, Any]) -> dict:
    """The ``SpaRTAN`` arch dict (channels, depths, expand_ratios,
    conv_types) that a backbone state dict in mmsparx's layout (keys
    without ``backbone.``) was made with, read off its shapes."""
    channels, depths, ratios, types = [], [], [], []
    for stage in range(4):
        prefix = f'stages.{stage}.blocks.'
        blocks = {int(k[len(prefix):].split('.')[0]) for k in state
                  if k.startswith(prefix)}
        if not blocks:
            raise ValueError(f'no blocks for stage {stage + 1}: not a '
                             'SpaRTAN state dict')
        first = f'{prefix}0.'
        dim = state[first + 'scale_1'].shape[1]
        hidden = state[first + 'cmixer.theta.weight'].shape[0]
        channels.append(int(dim))
        depths.append(len(blocks))
        ratio = hidden / dim
        ratios.append(int(ratio) if ratio == int(ratio) else ratio)
        depthwise = state[first + 'smixer.h_conv.conv.weight'].shape[1] == 1
        types.append('D' if depthwise else 'F')
    return dict(channels=tuple(channels), depths=tuple(depths),
                expand_ratios=tuple(ratios), conv_types=tuple(types))


def arch_name(arch: dict) -> Optional[str]:
    """'xt' / 't' when ``arch`` (read off a file, or a backbone's resolved
    arch with its activations and layer scale) is one of Table I's
    variants, else None."""
    return named_variant(arch, ARCH_SETTINGS, ARCH_DEFAULTS)
