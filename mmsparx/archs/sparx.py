"""SparX variants as data and the arch-dict checks: read by the
backbones (what to build) and the converters (what a file holds)."""
from __future__ import annotations

import copy
import re
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

from mmsparx.archs.common import lookup
from mmsparx.archs.sparx_connections import connection_plan, ganglion_indices

# Variants as data. ganglion_start: first index a ganglion layer
# may take in each stage (None: normal layers only).
ARCH_SETTINGS: Dict[str, dict] = {
    'tiny': dict(depths=(2, 2, 7, 2), channels=(96, 192, 320, 512),
                 stem='v1', strides=(1, 1, 2, 1),
                 ganglion_start=(None, 1, 0, 0)),
    'small': dict(depths=(2, 2, 17, 2), channels=(96, 192, 328, 544),
                  stem='v2', strides=(1, 1, 3, 1),
                  ganglion_start=(None, 1, 0, 0)),
    'base': dict(depths=(2, 2, 21, 3), channels=(120, 240, 396, 636),
                 stem='v2', strides=(1, 1, 3, 2),
                 ganglion_start=(None, 1, 0, 1)),
}
ALIASES = {'t': 'tiny', 's': 'small', 'b': 'base'}
# window: M, how many earlier ganglion outputs a ganglion layer reads (one
# number, or one per stage as the authors' ``max_dense_depth``).
ARCH_DEFAULTS = dict(window=3, sr_ratios=(8, 4, 2, 1),
                     layer_scale=(False, False, True, True), d_state=1,
                     ssm_ratio=2.0, mlp_ratio=4.0, attn_groups=4)
REQUIRED_KEYS = ('depths', 'channels', 'stem', 'strides', 'ganglion_start')
PER_STAGE_KEYS = ('depths', 'channels', 'strides', 'ganglion_start',
                  'sr_ratios', 'layer_scale', 'window')


def resolve_arch(arch: Union[str, dict], settings: Dict[str, dict],
                 aliases: Dict[str, str], defaults: dict,
                 family: str) -> dict:
    """A named variant or a custom dict, checked, with defaults filled;
    ``window`` comes back as one entry per stage."""
    arch = lookup(arch, settings, aliases, REQUIRED_KEYS, family)
    merged = dict(copy.deepcopy(defaults), **arch)
    if isinstance(merged['window'], int):
        merged['window'] = (merged['window'], ) * 4
    for key in PER_STAGE_KEYS:
        merged[key] = tuple(merged[key])
        if len(merged[key]) != 4:
            raise ValueError(f'{family}: arch[{key!r}] needs 4 entries (one '
                             f'per stage), got {merged[key]}')
    return merged


def _same(values: Sequence, what: str):
    if len(set(values)) != 1:
        raise ValueError(f"SparX: the authors' {what} differs per stage "
                         f'({list(values)}); mmsparx takes one value')
    return values[0]


def arch_from_authors(kwargs: Mapping) -> dict:
    """The keyword arguments of the authors' ``SparXMamba`` class (their
    ``dense_config`` and all) -> an mmsparx arch dict that builds the same
    layers, so their models of any size load and compute the same."""
    dense = kwargs['dense_config']
    if any(dense.get('cross_stage', (False, ) * 4)):
        raise ValueError('SparX: cross_stage=True (the stage input in the '
                         'ganglion list) is not in any published model and '
                         'not supported')
    unsupported = {k: kwargs[k] for k, v in (
        ('ssm_dt_rank', 'auto'), ('ssm_conv', 5), ('in_chans', 3))
        if k in kwargs and kwargs[k] != v}
    if unsupported:
        raise ValueError(f"SparX: the authors' arguments {unsupported} differ "
                         'from the published models and are not supported')
    depths = tuple(kwargs['depths'])
    ratio = kwargs.get('ssm_ratio', (2, ) * 4)
    mlp = kwargs.get('mlp_ratio', (4, ) * 4)
    return dict(
        depths=depths, channels=tuple(kwargs['dims']),
        stem=kwargs.get('stem_type', 'v1'),
        strides=tuple(dense['dense_step']),
        ganglion_start=tuple(None if start >= depth else start for start,
                             depth in zip(dense['dense_start'], depths)),
        window=tuple(dense['max_dense_depth']),
        sr_ratios=tuple(kwargs.get('sr_ratio', (8, 4, 2, 1))),
        layer_scale=tuple(v is not None for v in kwargs.get(
            'ls_init_value', (None, None, 1, 1))),
        d_state=kwargs.get('ssm_d_state', 1),
        ssm_ratio=float(_same(ratio, 'ssm_ratio')
                        if isinstance(ratio, (list, tuple)) else ratio),
        mlp_ratio=float(_same(mlp, 'mlp_ratio')
                        if isinstance(mlp, (list, tuple)) else mlp))


def stage_ganglia(arch: dict, stage: int) -> List[int]:
    """Ganglion layer indices of one stage of a resolved arch: the explicit
    ``ganglia`` if given, else the stride/start rule."""
    if arch.get('ganglia') is not None:
        return sorted(arch['ganglia'][stage])
    return ganglion_indices(arch['depths'][stage], arch['strides'][stage],
                            arch['ganglion_start'][stage])


def layer_signature(arch: Union[str, dict]) -> tuple:
    """What decides a SparX-Mamba's layers and their wiring: two archs with
    equal signatures build the same model (strides, starts and windows
    that give the same connections compare equal)."""
    arch = resolve_arch(arch, ARCH_SETTINGS, ALIASES, ARCH_DEFAULTS,
                        'SparXMamba')
    plans = []
    for i in range(4):
        ganglia = stage_ganglia(arch, i)
        plans.append(tuple(connection_plan(arch['depths'][i], ganglia,
                                           arch['window'][i], i > 0)))
        plans.append(arch['sr_ratios'][i] if ganglia else None)
    return (tuple(arch['depths']), tuple(arch['channels']), arch['stem'],
            tuple(plans), tuple(arch['layer_scale']), arch['d_state'],
            float(arch['ssm_ratio']), float(arch['mlp_ratio']))


SWIN_ARCH_SETTINGS: Dict[str, dict] = {
    'tiny': dict(depths=(2, 2, 7, 2), channels=(96, 192, 320, 576),
                 stem='v1', strides=(1, 1, 2, 1),
                 ganglion_start=(None, 1, 0, 0), num_heads=(3, 6, 10, 18),
                 mlp_ratio=3.0),
    'base': dict(depths=(2, 2, 27, 3), channels=(120, 240, 396, 616),
                 stem='v2', strides=(1, 1, 3, 2),
                 ganglion_start=(None, 1, 0, 1), num_heads=(4, 8, 12, 22),
                 mlp_ratio=3.375),
}
SWIN_DEFAULTS = dict(ARCH_DEFAULTS, window_size=7)


# -- reading an arch back from a file's tensor shapes -------------------------
def arch_from_shapes(shapes: Mapping[str, tuple]) -> Tuple[dict, dict]:
    """(arch dict, backbone kwargs) that build the model whose backbone
    tensors (mmsparx keys, without ``backbone.``) have ``shapes``: depths,
    widths, stem, ganglion layers and the window their input counts imply,
    reducers, layer scale, ratios, output norms and whether DMCA's scale
    is learned."""
    blocks = {}
    for key in shapes:
        match = re.match(r'stages\.(\d)\.blocks\.(\d+)\.', key)
        if match:
            blocks.setdefault(int(match.group(1)), set()).add(
                int(match.group(2)))
    if sorted(blocks) != [0, 1, 2, 3]:
        raise ValueError('not a SparX-Mamba state dict: it needs blocks in '
                         f'4 stages, found stages {sorted(blocks)}')
    depths, channels, ganglia, windows, srs, scales = [], [], [], [], [], []
    for i in range(4):
        pre = f'stages.{i}.blocks.'
        depths.append(max(blocks[i]) + 1)
        dim = shapes[pre + '0.pos_embed.weight'][0]
        channels.append(dim)
        found = sorted(j for j in blocks[i]
                       if pre + f'{j}.op.in_proj.d_norm.weight' in shapes)
        ganglia.append(found)
        inputs = [shapes[pre + f'{j}.op.in_proj.d_norm.weight'][0] // dim
                  for j in found]
        windows.append(_window(depths[i], found, inputs, i > 0))
        reducer = [shapes[k][-1] - 1 for k in shapes
                   if k.startswith(pre) and k.endswith('in_proj.q.0.0.weight')]
        srs.append(reducer[0] if reducer else
                   (1 if found else ARCH_DEFAULTS['sr_ratios'][i]))
        scales.append(any(k.startswith(pre) and k.endswith('in_proj.scale')
                          for k in shapes))
    first = 'stages.0.blocks.0.'
    strides, starts, explicit = [], [], False
    for depth, found in zip(depths, ganglia):
        stride = found[1] - found[0] if len(found) > 1 else 1
        start = found[0] if found else None
        explicit |= ganglion_indices(depth, stride, start) != found
        strides.append(stride)
        starts.append(start)
    arch = dict(
        depths=tuple(depths), channels=tuple(channels),
        stem='v2' if 'stem.6.weight' in shapes else 'v1',
        strides=tuple(strides), ganglion_start=tuple(starts),
        window=tuple(windows), sr_ratios=tuple(srs),
        layer_scale=tuple(f'stages.{i}.blocks.0.layerscale_1.weight' in shapes
                          for i in range(4)),
        d_state=shapes[first + 'op.A_logs'][1],
        ssm_ratio=shapes[first + 'op.conv2d.weight'][0] / channels[0],
        mlp_ratio=shapes[first + 'mlp.fc1.weight'][0] / channels[0])
    if explicit:
        arch['ganglia'] = tuple(tuple(g) for g in ganglia)
    outs = tuple(sorted(int(k.split('.')[1]) for k in shapes
                        if re.match(r'out_norms\.\d\.weight$', k)))
    kwargs = dict(dmca_scale='learned' if any(scales) else 'input',
                  out_indices=outs or (3, ))
    return arch, kwargs


def _window(depth: int, ganglia: List[int], inputs: List[int],
            stage_input: bool) -> int:
    """The smallest M whose connection plan gives each ganglion layer the
    number of inputs its d_norm was built for (M = 3 when any fits)."""
    for window in [ARCH_DEFAULTS['window']] + list(range(0, depth + 1)):
        plan = connection_plan(depth, ganglia, window, stage_input)
        if [len(plan[j]) for j in ganglia] == inputs:
            return window
    raise ValueError(f'no window M gives the ganglion layers {ganglia} '
                     f'their {inputs} inputs: not a SparX-Mamba state dict')


def arch_name(arch: dict) -> Optional[str]:
    """'tiny' / 'small' / 'base' when ``arch`` builds exactly that variant's
    layers, else None."""
    mine = layer_signature(arch)
    for name in ARCH_SETTINGS:
        if layer_signature(name) == mine:
            return name
    return None
