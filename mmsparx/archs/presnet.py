"""PResNet (RT-DETR's ResNet-vd family) variants as data: depth -> block
type, blocks per stage and stage widths, as the official
``rtdetr_pytorch/src/nn/backbone/presnet.py`` builds them."""
from __future__ import annotations

import copy
from typing import Dict

# Widths are the blocks' inner widths; a bottleneck's output is 4x that.
STAGE_CHANNELS = (64, 128, 256, 512)
STAGE_STRIDES = (4, 8, 16, 32)
EXPANSION = {'basic': 1, 'bottleneck': 4}

ARCH_SETTINGS: Dict[int, dict] = {
    18: dict(block='basic', depths=(2, 2, 2, 2), channels=STAGE_CHANNELS),
    34: dict(block='basic', depths=(3, 4, 6, 3), channels=STAGE_CHANNELS),
    50: dict(block='bottleneck', depths=(3, 4, 6, 3),
             channels=STAGE_CHANNELS),
    101: dict(block='bottleneck', depths=(3, 4, 23, 3),
              channels=STAGE_CHANNELS),
}

# ResNet variants (Bag of Tricks, He et al. 2019) as the official code reads
# them: 'a' strides a bottleneck's first 1x1 conv, the others its 3x3;
# 'c' and 'd' replace the 7x7 stem by three 3x3 convs; 'd' also moves a
# stride-2 shortcut's downsampling into a 2x2 average pool so the 1x1 conv
# sees every pixel.
VARIANTS: Dict[str, dict] = {
    'a': dict(deep_stem=False, stride_on_3x3=False, avg_down=False),
    'b': dict(deep_stem=False, stride_on_3x3=True, avg_down=False),
    'c': dict(deep_stem=True, stride_on_3x3=True, avg_down=False),
    'd': dict(deep_stem=True, stride_on_3x3=True, avg_down=True),
}
# (name, in, out, kernel, stride): the official ``conv1.<name>`` entries.
DEEP_STEM = (('conv1_1', 3, 32, 3, 2), ('conv1_2', 32, 32, 3, 1),
             ('conv1_3', 32, 64, 3, 1))
PLAIN_STEM = (('conv1_1', 3, 64, 7, 2), )


def resolve_depth(depth: int, variant: str = 'd') -> dict:
    """The setting of ``depth`` merged with ``variant``'s switches, plus the
    per-stage ``out_channels`` and the ``stem`` convs."""
    if depth not in ARCH_SETTINGS:
        raise KeyError(f'PResNet: unknown depth {depth!r}; valid depths: '
                       f'{sorted(ARCH_SETTINGS)}')
    if variant not in VARIANTS:
        raise KeyError(f'PResNet: unknown variant {variant!r}; valid '
                       f'variants: {sorted(VARIANTS)}')
    arch = copy.deepcopy(ARCH_SETTINGS[depth])
    arch.update(VARIANTS[variant])
    arch['out_channels'] = tuple(c * EXPANSION[arch['block']]
                                 for c in arch['channels'])
    arch['stem'] = DEEP_STEM if arch['deep_stem'] else PLAIN_STEM
    return arch
