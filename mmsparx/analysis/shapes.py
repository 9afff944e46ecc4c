"""The feature-map shapes the kernel benchmarks time, derived from
SparX-Mamba-T's variant table (``mmsparx.archs.sparx``) so that they follow
it: stage i has ``channels[i]`` at stride 4 * 2**i.

Keys are ``<input>-s<stage>`` for the block width C (what a block's norm
sees) and ``<input>-s<stage>-inner`` for SS2D's inner width ssm_ratio * C
(what its scan and output norm see), where ``<input>`` is ``cls224`` (the
ImageNet batch of 64 at 224x224) or ``dense`` (the detection batch of 2 at
800x1344).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List

from mmsparx.archs.sparx import ARCH_DEFAULTS, ARCH_SETTINGS

ARCH = 'tiny'
# input name: (batch, height, width) of the image batch.
INPUTS = {'cls224': (64, 224, 224), 'dense': (2, 800, 1344)}


@dataclass(frozen=True)
class Shape:
    """A (batch, channels, height, width) map and the delta projection's
    rank R of its stage's SS2D (``dt_rank='auto'``: ceil(C / 16))."""
    batch: int
    channels: int
    height: int
    width: int
    dt_rank: int


def stage_shapes(arch: str = ARCH) -> Dict[str, Shape]:
    """Every input x stage x {block, inner} shape of ``arch``."""
    settings = ARCH_SETTINGS[arch]
    ratio = settings.get('ssm_ratio', ARCH_DEFAULTS['ssm_ratio'])
    table = {}
    for name, (batch, height, width) in INPUTS.items():
        for index, channels in enumerate(settings['channels']):
            stride = 4 * 2 ** index
            key = f'{name}-s{index + 1}'
            size = (height // stride, width // stride)
            rank = math.ceil(channels / 16)
            table[key] = Shape(batch, channels, *size, rank)
            table[key + '-inner'] = Shape(batch, int(ratio * channels),
                                          *size, rank)
    return table


SHAPES: Dict[str, Shape] = stage_shapes()


def inner_names() -> List[str]:
    """The keys at SS2D's inner width: the scan's shapes."""
    return [name for name in SHAPES if name.endswith('-inner')]
