"""Norms of channels-first maps: a GroupNorm whose CUDA statistics do not
hang on the batch for their parallelism, and LayerNorm over channels."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _SplitStatsGroupNormFn(torch.autograd.Function):
    """GroupNorm whose statistics come from ``torch.var_mean`` over each
    (image, group) row: a reduction that CUDA spreads over many blocks per
    row, where ATen's group norm gives each row one block (at batch 2 with
    one group, 2 of an H200's 132 SMs: 39 % of SparX-T's dense step,
    ``gpu.md``). The output is written in ``out_dtype`` by the affine
    pass itself; the backward is ATen's group-norm backward on the same
    saved tensors (input, mean, 1/std) as ``F.group_norm``'s."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Optional[Tensor],
                bias: Optional[Tensor], groups: int, eps: float,
                out_dtype: torch.dtype) -> Tensor:
        b, c = x.shape[:2]
        per_group = (b, groups, 1)
        var, mean = torch.var_mean(x.reshape(b * groups, -1), dim=1,
                                   correction=0)
        rstd = (var + eps).rsqrt_()
        # out = x * scale + shift per (image, channel), all in one pass.
        scale = rstd.view(per_group) if weight is None else \
            rstd.view(per_group) * weight.view(1, groups, -1)
        scale = scale.expand(b, groups, c // groups)
        shift = -mean.view(per_group) * scale if bias is None else \
            torch.addcmul(bias.view(1, groups, -1), mean.view(per_group),
                          scale, value=-1)
        scale, shift = scale.reshape(b, c), shift.reshape(b, c)
        view = (b, c) + (1, ) * (x.dim() - 2)
        out = torch.empty(x.shape, dtype=out_dtype, device=x.device)
        torch.addcmul(shift.view(view), x, scale.view(view), out=out)
        ctx.save_for_backward(x, weight, mean.view(b, groups),
                              rstd.view(b, groups))
        ctx.groups, ctx.has_bias = groups, bias is not None
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight, mean, rstd = ctx.saved_tensors
        b, c = x.shape[:2]
        needs = ctx.needs_input_grad
        mask = [needs[0], needs[1] and weight is not None,
                needs[2] and ctx.has_bias]
        gx, gw, gb = torch.ops.aten.native_group_norm_backward(
            grad.to(x.dtype).contiguous(), x, mean, rstd, weight, b, c,
            x[0, 0].numel(), ctx.groups, mask)
        return gx, gw, gb, None, None, None


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` (same parameters and keys) whose CUDA statistics
    do not depend on the batch for their parallelism
    (:class:`_SplitStatsGroupNormFn`); other devices run ATen's.

    Under CUDA autocast it computes in float32, as autocast runs group
    norms; :meth:`forward` can write the result in the dtype the next
    layer reads (``out_dtype``), sparing that layer's cast.
    """

    def forward(self, x: Tensor,
                out_dtype: Optional[torch.dtype] = None) -> Tensor:
        if x.device.type != 'cuda' or torch.jit.is_tracing():
            out = super().forward(x)
            return out if out_dtype is None else out.to(out_dtype)
        autocast = torch.is_autocast_enabled('cuda')
        with torch.autocast('cuda', enabled=False):
            if autocast:
                x = x.float()
            return _SplitStatsGroupNormFn.apply(
                x.contiguous(), self.weight, self.bias, self.num_groups,
                self.eps, out_dtype or x.dtype)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map."""

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape,
                            self.weight, self.bias,
                            self.eps).permute(0, 3, 1, 2)
