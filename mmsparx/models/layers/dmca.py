"""DMCA: the Dynamic Multi-layer Channel Aggregator of a ganglion layer.

From the ganglion layer's own (normed) input X and the outputs Y_1..Y_L of
the layers connected to it (paper eq. 1-4):

    Yk, Yv = split(proj(GN(concat(Y_1..Y_L))))           # C each
    Q = BN(1x1(SR(X))), K = BN(1x1(SR(Yk))), V = BN(1x1(Yv))
    A = softmax(Q K^T / sqrt(N_r)) per group of C/G channels   # G x C/G x C/G
    Z = A V                                               # full resolution
    out = grouped1x1(GELU(DWConv(shuffle([X, Z, Yv]))))   # -> 2C

The spatial reducer SR (stride r) only shrinks Q and K: the attention is
channel-to-channel, so N_r tokens estimate it and V keeps its resolution.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .common import PointwiseConv


def spatial_reducer(dim: int, ratio: int) -> nn.Module:
    """DWConv (kernel r+1, stride r) + BN + GELU; identity when r = 1."""
    if ratio == 1:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(dim, dim, ratio + 1, stride=ratio, padding=(ratio + 1) // 2,
                  groups=dim, bias=False),
        nn.BatchNorm2d(dim), nn.GELU())


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(
        b, c, h, w)


class DMCA(nn.Module):
    """Cross-layer grouped channel attention producing the SS2D inner width.

    Args:
        dim: channels C of the ganglion layer.
        num_inputs: L, how many earlier outputs are concatenated.
        out_dim: output channels (SS2D's inner width, 2C).
        sr_ratio: spatial reduction r of Q and K.
        groups: G attention groups.
    """

    def __init__(self, dim: int, num_inputs: int, out_dim: int,
                 sr_ratio: int = 1, groups: int = 4):
        super().__init__()
        if dim % groups:
            raise ValueError(f'DMCA: {dim} channels do not split into '
                             f'{groups} attention groups')
        cat = num_inputs * dim
        self.dim, self.groups, self.out_dim = dim, groups, out_dim
        self.d_norm = nn.GroupNorm(1, cat)
        self.d_proj = nn.Sequential(
            nn.Conv2d(cat, cat, 3, padding=1, groups=cat, bias=False),
            nn.BatchNorm2d(cat), nn.GELU(), PointwiseConv(cat, 2 * dim),
            nn.GELU())
        self.q = nn.Sequential(spatial_reducer(dim, sr_ratio),
                               PointwiseConv(dim, dim, bias=False),
                               nn.BatchNorm2d(dim))
        self.k = nn.Sequential(spatial_reducer(dim, sr_ratio),
                               PointwiseConv(dim, dim, bias=False),
                               nn.BatchNorm2d(dim))
        self.v = nn.Sequential(PointwiseConv(dim, dim, bias=False),
                               nn.BatchNorm2d(dim))
        # [X, Z, Yv] fused per channel triple; 3 * floor(2C / 3) outputs,
        # the missing (2C mod 3) channels are filled in by pooling.
        fused = 3 * (out_dim // 3)
        self.fuse = nn.Sequential(
            nn.Conv2d(3 * dim, 3 * dim, 3, padding=1, groups=3 * dim),
            nn.GELU(), nn.Conv2d(3 * dim, fused, 1, groups=3))

    def attention(self, x: Tensor, yk: Tensor, yv: Tensor) -> Tensor:
        b, c, h, w = x.shape
        g = self.groups
        q = self.q(x).flatten(2).view(b, g, c // g, -1)
        k = self.k(yk).flatten(2).view(b, g, c // g, -1)
        v = self.v(yv).flatten(2).view(b, g, c // g, -1)
        scale = q.shape[-1] ** -0.5
        attn = torch.softmax((q @ k.transpose(-1, -2)) * scale, dim=-1)
        return (attn @ v).view(b, c, h, w)

    def forward(self, x: Tensor, inputs: Sequence[Tensor]) -> Tensor:
        y = self.d_proj(self.d_norm(torch.cat(list(inputs), dim=1)))
        yk, yv = y.chunk(2, dim=1)
        z = self.attention(x, yk, yv)
        out = self.fuse(channel_shuffle(torch.cat([x, z, yv], 1), 3))
        missing = self.out_dim - out.shape[1]
        if missing:
            # Channel-adaptive average pooling: the mean of `missing` equal
            # slices of the channels (the channel mean when 1 is missing).
            b, c, h, w = out.shape
            pooled = F.adaptive_avg_pool1d(
                out.permute(0, 2, 3, 1).reshape(b, h * w, c), missing)
            out = torch.cat([out, pooled.view(b, h, w, missing)
                             .permute(0, 3, 1, 2)], dim=1)
        return out
