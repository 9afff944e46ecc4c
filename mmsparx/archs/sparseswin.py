"""SparseSwin's variant table as data and the arch-dict checks:
read by the backbone (what to build) and the converter (what a file holds).
"""
from __future__ import annotations

import copy
import math
import re
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from mmsparx.archs.common import lookup, named_variant

# The authors' public setting: Swin-T stages 1-3, 49 tokens
# of width 512, 2 SparTa layers of 16 heads with qkv bias.
ARCH_SETTINGS: Dict[str, dict] = {
    'tiny': dict(embed_dims=96, depths=(2, 2, 6), num_heads=(3, 6, 12),
                 num_tokens=49, token_dims=512, sparta_depth=2,
                 sparta_heads=16),
}
ALIASES = {'t': 'tiny'}
ARCH_DEFAULTS = dict(window_size=7, patch_size=4, mlp_ratio=4.0,
                     qkv_bias=True, mlp_out_act=True)
REQUIRED_KEYS = ('embed_dims', 'depths', 'num_heads', 'num_tokens',
                 'token_dims', 'sparta_depth', 'sparta_heads')
OUT_TYPES = ('avg_featmap', 'raw')


def resolve_arch(arch: Union[str, dict], family: str) -> dict:
    """A named variant or a custom dict, checked, with defaults filled."""
    arch = lookup(arch, ARCH_SETTINGS, ALIASES, REQUIRED_KEYS, family)
    merged = dict(copy.deepcopy(ARCH_DEFAULTS), **arch)
    if len(merged['depths']) != len(merged['num_heads']):
        raise ValueError(f'{family}: depths {merged["depths"]} and num_heads '
                         f'{merged["num_heads"]} differ in length')
    if len(merged['depths']) != 3:
        raise ValueError(f'{family}: the SparTa block replaces Swin stage 4, '
                         f'so arch needs 3 Swin stages (stride 16), got '
                         f'depths {merged["depths"]}')
    return merged


def arch_from_authors(state_dict: Mapping[str, Any], sparta_heads: int = 16
                      ) -> Tuple[dict, Tuple[int, int], Optional[int]]:
    """(arch dict, img_size, num_classes) of an authors' state dict
    (num_classes None without ``fc_out``, e.g. a backbone read by
    ``official_view`` of :mod:`mmsparx.converters.sparseswin`). The SparTa
    head count leaves no trace in the
    weights: pass it (16 in the public setting)."""
    state = dict(state_dict)
    if state and all(k.startswith('module.') for k in state):
        state = {k[len('module.'):]: v for k, v in state.items()}
    depths, heads = [], []
    for index in (1, 3, 5):
        blocks = {int(m.group(1)) for k in state for m in [re.match(
            rf'^swin_model\.{index}\.(\d+)\.', k)] if m}
        depths.append(len(blocks))
        heads.append(state[f'swin_model.{index}.0.attn.'
                           'relative_position_bias_table'].shape[1])
    table = state['swin_model.1.0.attn.relative_position_bias_table']
    lin_t = state['step4.convert_token.lin_t.weight']
    side = math.isqrt(lin_t.shape[1])
    if side * side != lin_t.shape[1]:
        raise ValueError(f'lin_t takes {lin_t.shape[1]} positions, not a '
                         'square grid; give img_size yourself')
    token_dims = state['step4.convert_token.convert.weight'].shape[0]
    arch = dict(
        embed_dims=state['swin_model.0.0.weight'].shape[0],
        depths=tuple(depths), num_heads=tuple(heads),
        window_size=(math.isqrt(table.shape[0]) + 1) // 2,
        patch_size=state['swin_model.0.0.weight'].shape[-1],
        num_tokens=lin_t.shape[0], token_dims=token_dims,
        sparta_depth=len({k.split('.')[2] for k in state
                          if k.startswith('step4.mha.')}),
        sparta_heads=sparta_heads,
        mlp_ratio=state['step4.mlp.0.fc1.weight'].shape[0] / token_dims,
        qkv_bias='step4.mha.0.qkv.bias' in state)
    img = side * arch['patch_size'] * 4
    head = state.get('fc_out.weight')
    return arch, (img, img), None if head is None else head.shape[0]


def arch_name(arch: dict) -> Optional[str]:
    """'tiny' when ``arch`` (read off a file: the SparTa heads there are
    the public 16, or a backbone's resolved arch) is the public setting."""
    return named_variant(arch, ARCH_SETTINGS, ARCH_DEFAULTS)
