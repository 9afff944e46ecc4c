"""SparseSwin's variant table as data (spec 3) and the arch-dict checks:
read by the backbone (what to build) and the converter (what a file holds).
"""
from __future__ import annotations

import copy
from typing import Dict, Union

from mmsparx.archs.common import lookup

# The authors' public setting (spec section 3): Swin-T stages 1-3, 49 tokens
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
