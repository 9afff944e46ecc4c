"""SpaRTAN: Spatial Reinforcement Token-based Aggregation Network.

Stem (two 3x3/s2 conv-BN-act, stride 4) -> 4 stages of SpaRTAN blocks with a
2x2/s2 conv-BN-act downsample before stages 2-4 (Table I) -> one
optional norm per output. Channels first; outputs at strides 4, 8, 16, 32.

Beyond the authors' classifier (one size, no multi-scale outputs):

* odd sizes: the 2x2/s2 downsample would drop the last row/column of an
  odd map, so it is zero-padded at the bottom/right first; every output is
  ``ceil(H / stride)`` x ``ceil(W / stride)`` and even sizes are unchanged;
* ``out_norm`` adds a norm per dense output (the authors' classifier has
  none: use ``out_norm=None`` with a pooling neck and a linear head).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmsparx.archs.spartan import resolve_arch
from mmsparx.converters.spartan import convert_spartan, is_spartan_layout

from mmsparx.models.layers import ConvNormAct, LayerNorm2d, SpaRTANBlock
from mmsparx.models.layers.spartan import spartan_conv
from mmsparx.models.backbones.base import BlockStage, FourStageBackbone


class Downsample(ConvNormAct):
    """Non-overlapping patch embedding: 2x2/s2 conv, BN, act; odd maps are
    zero-padded at the bottom/right so no row or column is dropped."""

    def __init__(self, in_channels: int, out_channels: int, act: str):
        super().__init__(in_channels, out_channels, 2, stride=2, act=act,
                         padding=0, eps=1e-6, inplace=False)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        if h % 2 or w % 2:
            x = F.pad(x, (0, w % 2, 0, h % 2))
        return super().forward(x)


def make_out_norm(kind: Optional[str], dim: int) -> nn.Module:
    if kind == 'ln':
        return LayerNorm2d(dim, eps=1e-6)
    if kind == 'gn':
        return nn.GroupNorm(1, dim, eps=1e-6)
    if kind is None:
        return nn.Identity()
    raise ValueError(f"out_norm must be 'ln', 'gn' or None, got {kind!r}")


class SpaRTAN(FourStageBackbone):
    """SpaRTAN backbone (XT / T) for classification and dense tasks.

    Args:
        arch: 'xt' / 'xtiny', 't' / 'tiny', or a dict with ``channels``,
            ``depths``, ``expand_ratios`` (4 entries each) and optionally
            ``conv_types`` ('F'/'D' per stage; Table VIII's F, D and H are
            ``('F',)*4``, ``('D',)*4`` and the default ``('F','F','D','D')``),
            ``stem_act``, ``downsample_act``, ``block_act`` ('GELU', 'SiLU',
            'ReLU'; Table VI) and ``layer_scale_init`` (1e-5).
        out_indices: stages whose outputs are returned (NCHW, strides
            4, 8, 16, 32); negative indices count from the last stage.
        frozen_stages: freeze the stem and the first N stages (-1: none):
            eval mode and ``requires_grad=False``, re-applied in ``train()``.
        norm_eval: keep BatchNorm layers in eval mode while training.
        with_cp: activation checkpointing per block (BN running statistics
            are then updated twice per step, as in mmdet's ResNet).
        drop_path_rate: stochastic depth, linear over all blocks (the
            authors' ImageNet recipe: 0.1).
        out_norm: norm on each output: 'ln' (LayerNorm2d over channels,
            eps 1e-6, for FPN / UperNet), 'gn' (GroupNorm, 1 group) or None
            (the authors' classifier: pool the last stage directly).
        init_cfg: mmengine init config; ``dict(type='Pretrained',
            checkpoint=...)`` loads mmsparx files and the authors'
            ``{'model': ...}`` files alike (converted on load, every key
            reported; see ``tools/model_converters/spartan.py``).
    """

    def __init__(self, arch: Union[str, dict] = 't',
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1, norm_eval: bool = False,
                 with_cp: bool = False, drop_path_rate: float = 0.1,
                 out_norm: Optional[str] = 'ln',
                 init_cfg: Optional[Union[dict, List[dict]]] = None):
        super().__init__(init_cfg=init_cfg)
        self.arch = resolve_arch(arch)
        channels, depths = self.arch['channels'], self.arch['depths']
        if not out_indices or any(not -4 <= i < 4 for i in out_indices):
            raise ValueError(f'out_indices must name stages 0..3 (or -4..-1)'
                             f', got {out_indices}')
        if not -1 <= frozen_stages <= 4:
            raise ValueError(f'frozen_stages must be in -1..4, got '
                             f'{frozen_stages}')
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f'drop_path_rate must be in [0, 1), got '
                             f'{drop_path_rate}')
        self.out_indices = tuple(sorted({i % 4 for i in out_indices}))
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.channels = channels
        self.stem = nn.Sequential(
            spartan_conv(3, channels[0] // 2, 3, 2, 1,
                         act=self.arch['stem_act']),
            spartan_conv(channels[0] // 2, channels[0], 3, 2, 1,
                         act=self.arch['stem_act']))
        self.downsamples = nn.ModuleList([nn.Identity()] + [
            Downsample(channels[i - 1], channels[i],
                       self.arch['downsample_act']) for i in range(1, 4)])
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.stages = nn.ModuleList()
        for i in range(4):
            start = sum(depths[:i])
            self.stages.append(BlockStage([
                SpaRTANBlock(channels[i], self.arch['expand_ratios'][i],
                             self.arch['conv_types'][i], rates[start + j],
                             self.arch['layer_scale_init'],
                             self.arch['block_act'])
                for j in range(depths[i])], with_cp))
        self.out_norms = nn.ModuleDict({
            str(i): make_out_norm(out_norm, channels[i])
            for i in self.out_indices})
        self._freeze_stages()

    def checkpoint_format(self):  # see FourStageBackbone
        return convert_spartan, is_spartan_layout
