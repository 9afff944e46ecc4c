"""1x1 convolutions as batched matrix products on CPU (with the
backwards that pick their products) and the GroupNorm -> 1x1 pair that
keeps one map instead of two in training."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmsparx.models.layers.activations import (KERNEL_CODES, activate,
                                               activate_by_code,
                                               activation_backward)
from mmsparx.models.layers.norms import GroupNorm

# Weight gradients of maps up to this size are one product over the batch.
FOLD_WEIGHT_GRAD_PIXELS = 14 * 14


def product_grads(needs: tuple, has_bias: bool, grad: Tensor, a: Tensor,
                  weight: Tensor, w: Tensor) -> tuple:
    """Gradients of ``W @ a + b`` per image (``w``: ``weight`` as computed
    with): input's, weight's and bias's, each None unless ``needs`` it.

    Where ``w`` is a narrower copy (autocast), the weight's and bias's
    gradients are summed over the batch in ``weight``'s dtype, as autograd
    sums them through autocast's cast; the products take the forms that
    were fastest for bfloat16 on one thread at SparX-T's sizes (batch 8):
    the input's gradient as a bmm with a contiguous W^T (1.8-2.3 ms
    against 4.2-4.5 for matmul's at 14x14), the weight's as one product
    over the whole batch on maps of at most ``FOLD_WEIGHT_GRAD_PIXELS``
    (1.7-1.9 ms against 2.8-3.7) and per image on larger ones.
    """
    ga = gw = gb = None
    narrow = w.dtype != weight.dtype
    b, _, pixels = a.shape
    if needs[0]:
        ga = torch.bmm(w.t().contiguous().expand(b, -1, -1), grad) \
            if narrow else torch.matmul(w.t(), grad)
    if needs[1]:
        if narrow and pixels <= FOLD_WEIGHT_GRAD_PIXELS:
            gw = torch.mm(grad.transpose(0, 1).reshape(grad.shape[1], -1),
                          a.transpose(0, 1).reshape(a.shape[1], -1).t()
                          ).to(weight.dtype)
        elif narrow:
            per_image = torch.bmm(grad, a.transpose(1, 2))
            gw = per_image[0].to(weight.dtype)
            for part in per_image[1:]:
                gw += part
        else:
            gw = torch.mm(grad[0], a[0].t())
            for g, inp in zip(grad[1:], a[1:]):
                gw.addmm_(g, inp.t())
    if has_bias and needs[2]:
        # Over the map first, per image: a bfloat16 reduction over dims
        # (0, 2), or one into float32, ran at a twentieth of the speed on
        # SparX-T's stage-1 maps; summed in bfloat16 it lost precision.
        if not narrow:
            gb = grad.sum(2).sum(0)
        else:
            gb = grad[0].to(weight.dtype).sum(1)
            for g in grad[1:]:
                gb += g.to(weight.dtype).sum(1)
    return ga, gw, gb


class _PointwiseFn(torch.autograd.Function):
    """W @ act(x) + b per image, with a backward that picks its products.

    Autograd's baddbmm backward multiplies by the weight expanded over the
    batch, a stride-0 bmm that oneDNN ran at a quarter of its speed for
    SparX-T's stage-1 ConvFFN (K = 96, N = 3136: 39 ms of 12); and sums
    per-image weight gradients that were first all written out.

    Under autocast the product runs in ``dtype`` as autocast's would, but
    autocast's cast of the expanded weight is a (B, C_out, C_in) copy that
    autograd kept for backward: per image, a bfloat16 copy of every 1x1
    weight (20 MiB of SparX-T's 154 per 224x224 image). Here the float32
    parameter is kept and cast again in backward. ``act`` (GELU / SiLU
    before the product) is recomputed in backward from ``x``, the one map
    kept: the activation's input and the product's would be two.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Optional[Tensor],
                act: int = 0, dtype: Optional[torch.dtype] = None) -> Tensor:
        dtype = weight.dtype if dtype is None else dtype
        ctx.save_for_backward(x, weight)
        ctx.has_bias, ctx.act, ctx.dtype = bias is not None, act, dtype
        with torch.autocast('cpu', enabled=False):
            a = activate_by_code(x, act)
            w = weight.to(dtype)
            if bias is None:
                return torch.matmul(w, a)
            return torch.baddbmm(bias.to(dtype).view(1, -1, 1),
                                 w.expand(x.shape[0], -1, -1), a)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        with torch.autocast('cpu', enabled=False):
            a = activate_by_code(x, ctx.act)
            ga, gw, gb = product_grads(ctx.needs_input_grad[:3], ctx.has_bias,
                                       grad.contiguous(), a, weight,
                                       weight.to(ctx.dtype))
            gx = None if ga is None else activation_backward(ga, x, ctx.act)
        return gx, gw, gb, None, None


class _NormPointwiseFn(torch.autograd.Function):
    """W @ GroupNorm(x) + b per image (CPU training), keeping only ``x``
    and the norm's statistics: the normalised map, which the product's
    weight gradient needs, is the norm run again in backward (one pass
    over a map of ``x``'s size) instead of a second map kept. The norm's
    forward and backward are ATen's, as ``F.group_norm``'s autograd."""

    @staticmethod
    def forward(ctx, x: Tensor, gamma: Tensor, beta: Tensor, weight: Tensor,
                bias: Optional[Tensor], groups: int, eps: float,
                dtype: torch.dtype) -> Tensor:
        b, c, h, w = x.shape
        ctx.shape = (b, c, h * w, groups, eps)
        with torch.autocast('cpu', enabled=False):
            normed, mean, rstd = torch.native_group_norm(
                x, gamma, beta, b, c, h * w, groups, eps)
            a = normed.to(dtype).view(b, c, h * w)
            wl = weight.to(dtype)
            out = torch.matmul(wl, a) if bias is None else torch.baddbmm(
                bias.to(dtype).view(1, -1, 1), wl.expand(b, -1, -1), a)
        ctx.save_for_backward(x, gamma, beta, weight, mean, rstd)
        ctx.has_bias, ctx.dtype = bias is not None, dtype
        return out.view(b, -1, h, w)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, gamma, beta, weight, mean, rstd = ctx.saved_tensors
        b, c, hw, groups, eps = ctx.shape
        needs = ctx.needs_input_grad
        need_norm = needs[0] or needs[1] or needs[2]
        with torch.autocast('cpu', enabled=False):
            normed = torch.native_group_norm(x, gamma, beta, b, c, hw, groups,
                                             eps)[0]
            ga, gw, gb = product_grads(
                (need_norm, needs[3], needs[4]), ctx.has_bias,
                grad.reshape(b, -1, hw).contiguous(),
                normed.to(ctx.dtype).view(b, c, hw), weight,
                weight.to(ctx.dtype))
            gx = ggamma = gbeta = None
            if need_norm:
                gx, ggamma, gbeta = torch.ops.aten.native_group_norm_backward(
                    ga.to(x.dtype).reshape(x.shape).contiguous(), x, mean,
                    rstd, gamma, b, c, hw, groups, list(needs[:3]))
        return gx, ggamma, gbeta, gw, gb, None, None, None


class PointwiseConv(nn.Conv2d):
    """A 1x1 convolution (same parameters and keys as ``nn.Conv2d``) that
    runs as one batched matrix product on CPU.

    oneDNN's NCHW 1x1 convolution reorders its input and output to blocked
    layouts; on 2 CPU threads ``W @ x.view(B, C, H*W)`` is 1.5-3x faster at
    SparX's stage-1/2 sizes. In float32 training the gradients are
    :class:`_PointwiseFn`'s. CUDA, other layouts and tracing (FLOP counts
    price convolutions) take the convolution.
    """

    def __init__(self, in_channels: int, out_channels: int,
                 bias: bool = True):
        super().__init__(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.product(x, self.bias)

    def product(self, x: Tensor, bias: Optional[Tensor],
                act: Optional[str] = None) -> Tensor:
        """This layer's convolution of ``act(x)`` with ``bias`` (None:
        none); in CPU training ``act`` is recomputed in backward rather
        than its output kept."""
        if x.device.type != 'cpu' or not x.is_contiguous() or \
                torch.jit.is_tracing():
            return F.conv2d(activate(x, act), self.weight, bias)
        b, _, h, w = x.shape
        weight = self.weight.view(self.out_channels, -1)
        dtype = self._train_dtype(x)
        if dtype is not None:
            if x.dtype != dtype:
                # An activation then runs where autocast's would: before
                # the cast.
                x, act = activate(x, act).to(dtype), None
            return _PointwiseFn.apply(x.reshape(b, -1, h * w), weight, bias,
                                      KERNEL_CODES[act],
                                      dtype).view(b, -1, h, w)
        flat = activate(x, act).reshape(b, -1, h * w)
        if h * w <= self.FOLD_BATCH_MAX_PIXELS and b > 1:
            # (C_out, C_in) @ (C_in, B*HW): one product instead of B thin ones.
            cols = flat.transpose(0, 1).reshape(flat.shape[1], -1)
            out = torch.mm(weight, cols) if bias is None else \
                torch.addmm(bias.view(-1, 1), weight, cols)
            return out.view(-1, b, h, w).transpose(0, 1).contiguous()
        if bias is None:
            out = torch.bmm(weight.expand(b, -1, -1), flat)
        else:
            out = torch.baddbmm(bias.view(1, -1, 1),
                                weight.expand(b, -1, -1), flat)
        return out.view(b, -1, h, w)

    def normed(self, x: Tensor, norm: nn.Module) -> Tensor:
        """``self(norm(x))``; in CPU training with an affine GroupNorm the
        normalised map is not kept for backward but recomputed
        (:class:`_NormPointwiseFn`)."""
        dtype = self._train_dtype(x)
        if dtype is None or not isinstance(norm, nn.GroupNorm) or \
                not norm.affine or x.dim() != 4 or not x.is_contiguous() or \
                x.dtype not in (torch.float32, dtype) or \
                torch.jit.is_tracing() or x.device.type != 'cpu':
            if isinstance(norm, GroupNorm) and x.device.type == 'cuda' \
                    and torch.is_autocast_enabled('cuda'):
                # The product reads the autocast dtype: the norm writes it.
                return self(norm(x, torch.get_autocast_dtype('cuda')))
            return self(norm(x))
        return _NormPointwiseFn.apply(x, norm.weight, norm.bias,
                                      self.weight.view(self.out_channels, -1),
                                      self.bias, norm.num_groups, norm.eps,
                                      dtype)

    def _train_dtype(self, x: Tensor) -> Optional[torch.dtype]:
        """The dtype :class:`_PointwiseFn` computes ``x``'s product in where
        it does (CPU training, float32 weight: float32, or autocast's
        dtype; maps of at most ``FOLD_BATCH_MAX_PIXELS`` under autocast
        take the folded product); None elsewhere."""
        if not torch.is_grad_enabled() or self.weight.dtype != torch.float32 \
                or not (x.requires_grad or self.weight.requires_grad):
            return None
        if torch.is_autocast_enabled('cpu'):
            dtype = torch.get_autocast_dtype('cpu')
            if x.dtype not in (torch.float32, dtype) or (
                    x.shape[-2] * x.shape[-1] <= self.FOLD_BATCH_MAX_PIXELS
                    and x.shape[0] > 1):
                return None
            return dtype
        return torch.float32 if x.dtype == torch.float32 else None

    # Inference on maps this small multiplies once over the whole batch
    # (two transposing copies included): SparX-T's stage 4 at 224 (7x7,
    # batch 8, 2 threads) ran at 65-68 GMAC/s as 8 products and 82-84 as
    # one; at 14x14 one product was slower (59-81 against 81-85).
    FOLD_BATCH_MAX_PIXELS = 64
