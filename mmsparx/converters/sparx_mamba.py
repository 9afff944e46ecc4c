"""The authors' SparX-Mamba checkpoints -> mmsparx keys.

Classification files (``sparx_mamba_*_in1k.pth``, a plain state dict) map
onto an mmpretrain ``ImageClassifier`` (``backbone.*``, ``head.fc.*``);
mmdet / mmseg files (``backbone.*`` inside ``state_dict``) keep their
necks and heads and get the backbone renamed.
"""
from __future__ import annotations

import re
from typing import Callable, Dict, List, Optional, Tuple

from torch import Tensor

from mmsparx.archs.sparx import arch_from_shapes, arch_name

from mmsparx.converters.detect import (backbone_part, is_layout,
                                       refuse_other_family, register_reader)

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
    tensor shapes (:func:`mmsparx.archs.sparx.arch_from_shapes`)."""
    return arch_from_shapes(_backbone_shapes(state_dict))


@register_reader('SparX-Mamba')
def _read(state: Dict[str, Tensor], layout: str
          ) -> Tuple[dict, Optional[str], dict]:
    arch, kwargs = infer_arch(state)
    scale = {'dmca_scale': 'learned'} \
        if kwargs['dmca_scale'] == 'learned' else {}
    return arch, arch_name(arch), scale
