"""The authors' SparX-Mamba checkpoints (spec 1.4) -> mmsparx keys.

Classification files (``sparx_mamba_*_in1k.pth``, a plain state dict) map
onto an mmpretrain ``ImageClassifier`` (``backbone.*``, ``head.fc.*``);
mmdet / mmseg files (``backbone.*`` inside ``state_dict``) keep their
necks and heads and get the backbone renamed.
"""
from __future__ import annotations

import re
from typing import Callable, Dict, List, Optional, Tuple

from torch import Tensor

from mmsparx.archs.sparx import ARCH_DEFAULTS, ARCH_SETTINGS, layer_signature
from mmsparx.archs.sparx_connections import (connection_plan,
                                             ganglion_indices)

from mmsparx.converters.detect import backbone_part, is_layout, refuse_other_family

# (pattern on an authors' backbone key, replacement), first match wins.
_GANGLION = r'(d_norm|d_proj|q|k|v)'
RULES: List[Tuple[str, str]] = [
    (r'^patch_embed\.', 'stem.'),
    # The detection models' learned softmax scale (shape [1]) is DMCA's.
    (r'^layers\.(\d+)\.blocks\.(\d+)\.op\.scale$',
     r'stages.\1.blocks.\2.op.in_proj.scale'),
    (rf'^layers\.(\d+)\.blocks\.(\d+)\.op\.{_GANGLION}\.',
     r'stages.\1.blocks.\2.op.in_proj.\3.'),
    # A ganglion layer's in_proj is DMCA's fusion (DWConv, GELU, 1x1/g3).
    (r'^layers\.(\d+)\.blocks\.(\d+)\.op\.in_proj\.(\d+)\.',
     r'stages.\1.blocks.\2.op.in_proj.fuse.\3.'),
    (r'^layers\.(\d+)\.blocks\.', r'stages.\1.blocks.'),
    (r'^classifier\.0\.', 'out_norms.3.'),
    (r'^norm\.(\d+)\.', r'out_norms.\1.'),
]


def _downsample(match: re.Match) -> str:
    # The authors downsample at the end of stage i; mmsparx at the start
    # of stage i + 1.
    return f'downsamples.{int(match.group(1)) + 1}.{match.group(2)}'


def is_official_layout(state_dict: Dict[str, Tensor]) -> bool:
    """True for the authors' key names (with or without ``backbone.``):
    ``patch_embed.{i}``, ``layers.{i}.blocks.{j}`` / ``.downsample``, not
    any ``layers.*`` (SpaRTAN's authors use ``layers.{k}.scale_1``)."""
    return is_layout(state_dict, 'SparX-Mamba', 'authors')


def convert_backbone_key(key: str) -> str:
    """One authors' backbone key -> mmsparx ``SparXMamba`` key."""
    match = re.match(r'^layers\.(\d+)\.downsample\.(.+)$', key)
    if match:
        return _downsample(match)
    for pattern, replacement in RULES:
        if re.match(pattern, key):
            return re.sub(pattern, replacement, key, count=1)
    raise KeyError(f'SparX-Mamba converter: no rule for key {key!r}; is '
                   'this an authors\' SparX-Mamba checkpoint?')


def convert_sparx_mamba(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Authors' state dict -> mmsparx full-model state dict.

    ``classifier.3.*`` becomes ``head.fc.*``; every other authors' key goes
    under ``backbone.``; keys of a detector/segmentor outside its backbone
    (``neck.*``, ``decode_head.*``, ...) are kept as they are. Another
    family's file raises :class:`CheckpointError` naming that family.
    """
    refuse_other_family(state_dict, 'SparX-Mamba')
    out: Dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith('classifier.3.'):
            new = 'head.fc.' + key[len('classifier.3.'):]
        elif key.startswith('backbone.'):
            new = 'backbone.' + convert_backbone_key(key[len('backbone.'):])
        elif re.match(r'^(patch_embed|layers|classifier|norm)\.', key):
            new = 'backbone.' + convert_backbone_key(key)
        else:
            new = key
        if new in out:
            raise KeyError(f'two keys map to {new!r}')
        out[new] = value
    return out


CONVERTERS: Dict[str, Callable] = {'sparx-mamba': convert_sparx_mamba}


def _backbone_shapes(state_dict: Dict[str, Tensor]) -> Dict[str, tuple]:
    """mmsparx backbone key -> shape, from an authors' or mmsparx file."""
    if is_official_layout(state_dict) and not any(
            k.startswith(('stages.', 'backbone.stages.')) for k in state_dict):
        state_dict = convert_sparx_mamba(state_dict)
    return {k: tuple(v.shape) for k, v in backbone_part(state_dict).items()}


def infer_arch(state_dict: Dict[str, Tensor]) -> Tuple[dict, dict]:
    """(arch dict, backbone kwargs) that build the model a SparX-Mamba file
    (authors' or mmsparx layout, any size) was saved from, read off its
    tensor shapes: depths, widths, stem, ganglion layers and the window
    their input counts imply, reducers, layer scale, ratios, output norms
    and whether DMCA's scale is learned."""
    shapes = _backbone_shapes(state_dict)
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
