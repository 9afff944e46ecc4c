"""SS2D: VMamba's 2-D selective-scan token mixer (channels first).

in_proj (1x1, C -> 2C) -> DWConv 5x5 -> SiLU -> 4-direction cross scan ->
selective scan (per direction: x_proj, dt_proj, A, D) -> merge -> GroupNorm
-> out_proj (1x1, 2C -> C). The ganglion layer's DMCA replaces in_proj.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from mmsparx.ops import cross_selective_scan

from mmsparx.models.layers.depthwise import (DepthwiseConv,
                                             pointwise_then_depthwise)
from mmsparx.models.layers.norms import GroupNorm
from mmsparx.models.layers.pointwise import PointwiseConv

DIRECTIONS = 4


class SS2D(nn.Module):
    """The selective-scan token mixer.

    Args:
        dim: input/output channels C.
        d_state: SSM state size N (SparX: 1).
        ssm_ratio: inner width 2C = ssm_ratio * C.
        dt_rank: rank R of the delta projection; 'auto' is ceil(C / 16).
        d_conv: kernel of the depthwise conv before the scan.
        in_proj: module producing the inner width from the input; the
            default 1x1 conv, or a DMCA for ganglion layers.
        scan_backend: 'auto' or a name from ``mmsparx.ops.BACKENDS``.
    """

    def __init__(self, dim: int, d_state: int = 1, ssm_ratio: float = 2.0,
                 dt_rank: int | str = 'auto', d_conv: int = 5,
                 in_proj: Optional[nn.Module] = None,
                 dt_min: float = 1e-3, dt_max: float = 0.1,
                 dt_floor: float = 1e-4, scan_backend: str = 'auto'):
        super().__init__()
        inner = int(ssm_ratio * dim)
        rank = math.ceil(dim / 16) if dt_rank == 'auto' else int(dt_rank)
        self.d_inner, self.d_state, self.dt_rank = inner, d_state, rank
        self.scan_backend = scan_backend
        self.in_proj = in_proj if in_proj is not None else PointwiseConv(
            dim, inner)
        self.conv2d = DepthwiseConv(inner, d_conv)
        # Per direction: x -> (delta rank R, B, C); the authors'
        # (4(R+2N), D, 1) layout, applied to the map as one matmul for all
        # directions.
        self.x_proj_weight = nn.Parameter(
            torch.empty(DIRECTIONS * (rank + 2 * d_state), inner, 1))
        self.dt_projs_weight = nn.Parameter(
            torch.empty(DIRECTIONS, inner, rank))
        self.dt_projs_bias = nn.Parameter(torch.empty(DIRECTIONS, inner))
        # A = -exp(A_log), initialised to -(1..N); D = 1. Neither decays.
        self.A_logs = nn.Parameter(torch.log(torch.arange(
            1, d_state + 1, dtype=torch.float32)).repeat(DIRECTIONS * inner,
                                                         1))
        self.Ds = nn.Parameter(torch.ones(DIRECTIONS * inner))
        self.A_logs._no_weight_decay = True
        self.Ds._no_weight_decay = True
        self.out_norm = GroupNorm(1, inner)
        self.out_proj = PointwiseConv(inner, dim)
        self._init_ssm(dt_min, dt_max, dt_floor)

    def _init_ssm(self, dt_min: float, dt_max: float, dt_floor: float) -> None:
        bound = self.d_inner ** -0.5
        nn.init.uniform_(self.x_proj_weight, -bound, bound)
        nn.init.uniform_(self.dt_projs_weight, -self.dt_rank ** -0.5,
                         self.dt_rank ** -0.5)
        # softplus(bias) is log-uniform in [dt_min, dt_max]: invert softplus.
        dt = torch.exp(torch.rand(DIRECTIONS, self.d_inner) *
                       (math.log(dt_max) - math.log(dt_min)) +
                       math.log(dt_min)).clamp(min=dt_floor)
        with torch.no_grad():
            self.dt_projs_bias.copy_(dt + torch.log(-torch.expm1(-dt)))

    def scan(self, x: Tensor) -> Tensor:
        """(B, 2C, H, W) after conv+SiLU -> merged scan output, same shape
        (x's dtype; float32 under CUDA autocast).

        x_proj acts per pixel, so it runs once on the map for all four
        directions; dt_proj goes into the scan op (fused on CPU).
        """
        b, d, h, w = x.shape
        length = h * w
        # One (4(R+2N), D) @ (D, L) product per image; a broadcast batched
        # matmul would first copy x four times, and matmul's 2-D @ 3-D
        # folding copies it transposed.
        weight = self.x_proj_weight.view(-1, d)
        proj = torch.bmm(weight.expand(b, -1, -1),
                         x.reshape(b, d, length)).view(
                             b, DIRECTIONS, -1, length)
        dts, Bs, Cs = torch.split(
            proj, [self.dt_rank, self.d_state, self.d_state], dim=2)
        # Under CUDA autocast the group norm after the scan runs in float32:
        # the scan's float32 sum goes in as it is, not cast down and up.
        keep = x.device.type == 'cuda' and torch.is_autocast_enabled('cuda')
        return cross_selective_scan(
            x, dts, self.dt_projs_weight, -torch.exp(self.A_logs.float()),
            Bs, Cs, self.Ds,
            self.dt_projs_bias.reshape(-1), delta_softplus=True,
            backend=self.scan_backend,
            out_dtype=torch.float32 if keep else x.dtype)

    @property
    def takes_norm(self) -> bool:
        """Whether ``forward`` takes the norm before it (``norm=``): with
        the 1x1 input projection, which then applies it (see
        ``PointwiseConv.normed``)."""
        return isinstance(self.in_proj, PointwiseConv)

    def forward(self, x: Tensor, *in_proj_args,
                norm: Optional[nn.Module] = None) -> Tensor:
        """SS2D of ``x``, or of ``norm(x)``."""
        if norm is not None and (in_proj_args or not self.takes_norm
                                 or not torch.is_grad_enabled()):
            x, norm = norm(x), None
        if norm is not None:
            x = self.conv2d.fused(self.in_proj.normed(x, norm), act='silu')
        elif isinstance(self.in_proj, PointwiseConv):
            x = pointwise_then_depthwise(self.in_proj, self.conv2d, x,
                                         act='silu')
        else:
            x = self.conv2d.fused(self.in_proj(x, *in_proj_args), act='silu')
        return self.out_proj.normed(self.scan(x), self.out_norm)
