"""RT-DETR's hybrid encoder (AIFI + CCFM) as an mmdet neck.

Per-level 1x1 conv + BN input projections to ``hidden_dim``; AIFI (a
post-norm transformer encoder with a 2-D sin-cos position embedding) on
the levels of ``use_encoder_idx`` (stride 32 only in RT-DETR); CCFM, a
PAN of CSPRepLayers: top-down from the top level, then bottom-up.
Outputs [P3, N4, N5], ``hidden_dim`` channels each, at the input strides.

Settings (hidden 256, 8 heads, FFN 1024, 1 AIFI layer, depth_mult 1.0;
parameter counts measured by ``tests/test_rtdetr_encoder.py``):

===========  ==================  =========  ========  ==========  ==========
backbone     in_channels         expansion  AIFI      input_proj  total
===========  ==================  =========  ========  ==========  ==========
R18vd/R34vd  (128, 256, 512)     0.5        789,760   230,912     4,965,120
R50vd/R101   (512, 1024, 2048)   1.0        789,760   919,040     11,950,848
===========  ==================  =========  ========  ==========  ==========

Everything but the input projections depends only on the expansion:
4,734,208 (0.5) and 11,031,808 (1.0) parameters.

Keys follow the official checkpoints: ``input_proj.{i}.{0,1}`` (conv, BN),
``encoder.{j}.layers.{k}.*``, ``lateral_convs.{i}``, ``fpn_blocks.{i}``,
``downsample_convs.{i}``, ``pan_blocks.{i}``.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor, nn

from mmsparx.models.layers.transformer.aifi import AIFI
from mmsparx.models.layers.conv_norm import ConvNormAct
from mmsparx.models.layers.csp_rep_layer import CSPRepLayer


class HybridEncoder(BaseModule):
    """RT-DETR hybrid encoder (the official ``HybridEncoder``).

    Every conv keeps PyTorch's default initialisation: no ``init_cfg`` is
    applied unless given (mmcv's ConvModule init cost AP in an mmdet port).

    Args:
        in_channels: channels of the backbone levels, low to high.
        feat_strides: their strides (kept as ``out_strides``).
        hidden_dim: channels of every internal and output map.
        num_heads: AIFI attention heads.
        ffn_dim: AIFI FFN hidden width.
        dropout: AIFI dropout.
        enc_act: AIFI FFN activation.
        use_encoder_idx: levels that pass through AIFI (one AIFI each).
        num_encoder_layers: layers per AIFI; 0 skips AIFI.
        pe_temperature: temperature of the sin-cos position embedding.
        expansion: CSPRepLayer hidden ratio (0.5 for R18/R34, 1.0 R50).
        depth_mult: scales the 3 RepVGG blocks of each CSPRepLayer.
        act: activation of the CCFM bricks.
        eval_spatial_size: (h, w) of the eval input; accepted for config
            parity with the official one, unused: the position embedding
            is computed on the fly for every size.
        init_cfg: mmengine init config (None: PyTorch defaults).
    """

    def __init__(self,
                 in_channels: Sequence[int] = (512, 1024, 2048),
                 feat_strides: Sequence[int] = (8, 16, 32),
                 hidden_dim: int = 256,
                 num_heads: int = 8,
                 ffn_dim: int = 1024,
                 dropout: float = 0.0,
                 enc_act: str = 'gelu',
                 use_encoder_idx: Sequence[int] = (2, ),
                 num_encoder_layers: int = 1,
                 pe_temperature: float = 10000,
                 expansion: float = 1.0,
                 depth_mult: float = 1.0,
                 act: Optional[str] = 'silu',
                 eval_spatial_size: Optional[Sequence[int]] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        num_levels = len(in_channels)
        if len(feat_strides) != num_levels:
            raise ValueError(f'feat_strides {tuple(feat_strides)} must give '
                             f'one stride per level of {tuple(in_channels)}')
        if any(not -num_levels <= i < num_levels for i in use_encoder_idx):
            raise ValueError(f'use_encoder_idx {tuple(use_encoder_idx)} out '
                             f'of range for {num_levels} levels')
        self.in_channels = tuple(in_channels)
        self.feat_strides = tuple(feat_strides)
        self.hidden_dim = hidden_dim
        self.use_encoder_idx = tuple(i % num_levels for i in use_encoder_idx)
        self.num_encoder_layers = num_encoder_layers
        self.eval_spatial_size = eval_spatial_size
        self.out_channels = [hidden_dim] * num_levels
        self.out_strides = list(feat_strides)

        # No activation: the projection only aligns widths for AIFI/CCFM.
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, hidden_dim, 1, bias=False),
                          nn.BatchNorm2d(hidden_dim)) for c in in_channels)
        self.encoder = nn.ModuleList(
            AIFI(hidden_dim, num_heads, ffn_dim, dropout, enc_act,
                 num_encoder_layers, pe_temperature)
            for _ in self.use_encoder_idx)

        num_blocks = round(3 * depth_mult)
        # Index i of the top-down modules fuses level L-1-i into L-2-i.
        self.lateral_convs = nn.ModuleList(
            ConvNormAct(hidden_dim, hidden_dim, 1, act=act)
            for _ in range(num_levels - 1))
        self.fpn_blocks = nn.ModuleList(
            CSPRepLayer(2 * hidden_dim, hidden_dim, num_blocks, expansion, act)
            for _ in range(num_levels - 1))
        self.downsample_convs = nn.ModuleList(
            ConvNormAct(hidden_dim, hidden_dim, 3, stride=2, act=act)
            for _ in range(num_levels - 1))
        self.pan_blocks = nn.ModuleList(
            CSPRepLayer(2 * hidden_dim, hidden_dim, num_blocks, expansion, act)
            for _ in range(num_levels - 1))

    @staticmethod
    def _upsample(x: Tensor, size: torch.Size) -> Tensor:
        if size[0] == 2 * x.shape[-2] and size[1] == 2 * x.shape[-1]:
            return F.interpolate(x, scale_factor=2., mode='nearest')
        # Odd input sizes (ceil-rounded strides): the official falls back
        # to bilinear resizing onto the lower level's grid.
        return F.interpolate(x, size=size, mode='bilinear')

    def forward(self, feats: Sequence[Tensor]) -> Tuple[Tensor, ...]:
        """feats: per level [B, in_channels[l], H_l, W_l], low to high.

        Returns:
            [P3, N4, N5]: [B, hidden_dim, H_l, W_l] per level.
        """
        if len(feats) != len(self.in_channels):
            raise ValueError(f'expected {len(self.in_channels)} levels, got '
                             f'{len(feats)}')
        proj: List[Tensor] = [
            m(x) for m, x in zip(self.input_proj, feats)]
        if self.num_encoder_layers > 0:
            for aifi, idx in zip(self.encoder, self.use_encoder_idx):
                proj[idx] = aifi(proj[idx])

        # Top-down: the lateral conv's output replaces the higher level for
        # the bottom-up pass as well (inner[0] is always the lowest so far).
        num_levels = len(proj)
        inner = [proj[-1]]
        for i in range(num_levels - 1):
            high = self.lateral_convs[i](inner[0])
            inner[0] = high
            low = proj[num_levels - 2 - i]
            up = self._upsample(high, low.shape[-2:])
            inner.insert(0, self.fpn_blocks[i](torch.cat([up, low], dim=1)))

        outs = [inner[0]]
        for i in range(num_levels - 1):
            down = self.downsample_convs[i](outs[-1])
            outs.append(
                self.pan_blocks[i](torch.cat([down, inner[i + 1]], dim=1)))
        return tuple(outs)
