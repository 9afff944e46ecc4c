"""DMCA: the Dynamic Multi-layer Channel Aggregator of a ganglion layer.

From the ganglion layer's own (normed) input X and the outputs Y_1..Y_L of
the layers connected to it (paper eq. 1-4, as the authors' code computes it):

    Yk, Yv = split(proj(GN(concat(Y_1..Y_L))))           # C each
    Q = BN(1x1(SR(X))), K = BN(1x1(SR(Yk))), V = BN(1x1(Yv))
    A = softmax(Q K^T * scale) per group of C/G channels  # G x C/G x C/G
    Z = A V                                               # full resolution
    X' = Q if SR keeps the size (stage 4, r = 1) else X
    out = grouped1x1(GELU(DWConv(shuffle([X', Z, V]))))   # -> 2C

The spatial reducer SR (stride r) only shrinks Q and K: the attention is
channel-to-channel, so N_r tokens estimate it and V keeps its resolution.
``scale`` is 1/sqrt(N_r) of each input (the authors' classification and
segmentation models) or one learned scalar (their detection model).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmsparx.models.layers.depthwise import DepthwiseConv
from mmsparx.models.layers.norms import GroupNorm
from mmsparx.models.layers.pointwise import PointwiseConv


def spatial_reducer(dim: int, ratio: int) -> nn.Module:
    """DWConv (kernel r+1, stride r) + BN + GELU; identity when r = 1."""
    if ratio == 1:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(dim, dim, ratio + 1, stride=ratio, padding=(ratio + 1) // 2,
                  groups=dim, bias=False),
        nn.BatchNorm2d(dim), nn.GELU())


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """The authors' ``(c g) -> (g c)`` regrouping: output channel
    ``g * C + c`` is input channel ``groups * c + g`` (C = channels/groups),
    so each of the fusion conv's ``groups`` groups sees every g-th channel
    of ``[X', Z, V]``."""
    b, c, h, w = x.shape
    return x.view(b, c // groups, groups, h, w).transpose(1, 2).reshape(
        b, c, h, w)


# The authors' detection initialisation: 1/sqrt(N_r) of an 800x1333 image
# at stride 16 reduced 64-fold ("for large-resolution stability").
LEARNED_SCALE_INIT = ((800 * 1333 / 16) / 64) ** -0.5
SCALE_MODES = ('input', 'learned')


class DMCA(nn.Module):
    """Cross-layer grouped channel attention producing the SS2D inner width.

    Args:
        dim: channels C of the ganglion layer.
        num_inputs: L, how many earlier outputs are concatenated.
        out_dim: output channels (SS2D's inner width, 2C).
        sr_ratio: spatial reduction r of Q and K.
        groups: G attention groups.
        scale: 'input' (1/sqrt(N_r) per input) or 'learned' (a parameter
            ``scale`` initialised to :data:`LEARNED_SCALE_INIT`).
    """

    def __init__(self, dim: int, num_inputs: int, out_dim: int,
                 sr_ratio: int = 1, groups: int = 4, scale: str = 'input'):
        super().__init__()
        if dim % groups:
            raise ValueError(f'DMCA: {dim} channels do not split into '
                             f'{groups} attention groups')
        if scale not in SCALE_MODES:
            raise ValueError(f'DMCA scale must be one of {SCALE_MODES}, got '
                             f'{scale!r}')
        cat = num_inputs * dim
        self.dim, self.groups, self.out_dim = dim, groups, out_dim
        self.d_norm = GroupNorm(1, cat)
        self.d_proj = nn.Sequential(
            DepthwiseConv(cat, 3, bias=False), nn.BatchNorm2d(cat), nn.GELU(),
            PointwiseConv(cat, 2 * dim),
            nn.GELU())
        self.q = nn.Sequential(spatial_reducer(dim, sr_ratio),
                               PointwiseConv(dim, dim, bias=False),
                               nn.BatchNorm2d(dim))
        self.k = nn.Sequential(spatial_reducer(dim, sr_ratio),
                               PointwiseConv(dim, dim, bias=False),
                               nn.BatchNorm2d(dim))
        self.v = nn.Sequential(PointwiseConv(dim, dim, bias=False),
                               nn.BatchNorm2d(dim))
        if scale == 'learned':
            self.scale = nn.Parameter(torch.full((1, ), LEARNED_SCALE_INIT))
        else:
            self.register_parameter('scale', None)
        # [X', Z, V] fused per channel triple; 3 * floor(2C / 3) outputs,
        # the missing (2C mod 3) channels are filled in by pooling.
        fused = 3 * (out_dim // 3)
        self.fuse = nn.Sequential(
            DepthwiseConv(3 * dim, 3), nn.GELU(),
            nn.Conv2d(3 * dim, fused, 1, groups=3))

    def attention(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """softmax(Q K^T * scale) V per channel group; q, k (B, C, N_r),
        v (B, C, L) -> (B, C, L)."""
        b, c, tokens = q.shape
        g = self.groups
        q = q.view(b, g, c // g, tokens)
        k = k.view(b, g, c // g, tokens)
        v = v.view(b, g, c // g, -1)
        scale = tokens ** -0.5 if self.scale is None else self.scale
        attn = torch.softmax((q @ k.transpose(-1, -2)) * scale, dim=-1)
        return (attn @ v).view(b, c, -1)

    def _project(self, x: Tensor) -> Tensor:
        """``d_proj``: its depthwise conv, BN and GELU as one fused call."""
        dwconv, norm, _, proj, _ = self.d_proj
        return F.gelu(proj(dwconv.fused_bn(x, norm, act='gelu')))

    def forward(self, x: Tensor, inputs: Sequence[Tensor]) -> Tensor:
        y = self._project(self.d_norm(torch.cat(list(inputs), dim=1)))
        yk, yv = y.chunk(2, dim=1)
        b, c, h, w = x.shape
        q, k, v = self.q(x), self.k(yk), self.v(yv)
        z = self.attention(q.flatten(2), k.flatten(2), v.flatten(2))
        # Where SR keeps the size (r = 1, or a map too small to shrink) the
        # authors concatenate the projected Q in place of X.
        first = q if q.shape[-2:] == x.shape[-2:] else x
        dwconv, _, mix = self.fuse
        out = mix(dwconv.fused(channel_shuffle(
            torch.cat([first, z.view(b, c, h, w), v], 1), 3), act='gelu'))
        missing = self.out_dim - out.shape[1]
        if missing:
            # Channel-adaptive average pooling: the mean of `missing` equal
            # slices of the channels (the channel mean when 1 is missing).
            pooled = F.adaptive_avg_pool1d(
                out.permute(0, 2, 3, 1).reshape(b, h * w, -1), missing)
            out = torch.cat([out, pooled.view(b, h, w, missing)
                             .permute(0, 3, 1, 2)], dim=1)
        return out
