"""Small channels-first building blocks shared by the backbones."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmsparx.utils.malloc import MMAP_THRESHOLD


_ACTS = {None: 0, 'gelu': 1, 'silu': 2}


def _activate_code(x: Tensor, act: int) -> Tensor:
    """``_activate`` by its ``_ACTS`` code."""
    if act == 1:
        return F.gelu(x)
    return F.silu(x) if act == 2 else x


def _activate_backward(grad: Tensor, x: Tensor, act: int) -> Tensor:
    """The gradient autograd gives ``x`` through ``_activate_code(x, act)``
    (the same ATen backward kernels)."""
    if act == 1:
        return torch.ops.aten.gelu_backward(grad, x)
    return torch.ops.aten.silu_backward(grad, x) if act == 2 else grad


def _product_grads(needs: tuple, has_bias: bool, grad: Tensor, a: Tensor,
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


FOLD_WEIGHT_GRAD_PIXELS = 14 * 14


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
            a = _activate_code(x, act)
            w = weight.to(dtype)
            if bias is None:
                return torch.matmul(w, a)
            return torch.baddbmm(bias.to(dtype).view(1, -1, 1),
                                 w.expand(x.shape[0], -1, -1), a)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors
        with torch.autocast('cpu', enabled=False):
            a = _activate_code(x, ctx.act)
            ga, gw, gb = _product_grads(ctx.needs_input_grad[:3],
                                        ctx.has_bias, grad.contiguous(), a,
                                        weight, weight.to(ctx.dtype))
            gx = None if ga is None else _activate_backward(ga, x, ctx.act)
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
            ga, gw, gb = _product_grads(
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
            return F.conv2d(_activate(x, act), self.weight, bias)
        b, _, h, w = x.shape
        weight = self.weight.view(self.out_channels, -1)
        dtype = self._train_dtype(x)
        if dtype is not None:
            if x.dtype != dtype:
                # An activation then runs where autocast's would: before
                # the cast.
                x, act = _activate(x, act).to(dtype), None
            return _PointwiseFn.apply(x.reshape(b, -1, h * w), weight, bias,
                                      _ACTS[act], dtype).view(b, -1, h, w)
        flat = _activate(x, act).reshape(b, -1, h * w)
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


def _depthwise_kernel(x: Tensor, weight: Tensor, bias: Optional[Tensor],
                      residual: bool = False, act: Optional[str] = None,
                      in_bias: Optional[Tensor] = None) -> Tensor:
    """The C++ inference kernel ``depthwise_conv_act``; it takes empty
    tensors where a bias is absent."""
    from mmsparx.ops.selective_scan import _cpu_kernel
    none = x.new_empty(0)
    return _cpu_kernel().depthwise_conv_act(
        x, weight, none if bias is None else bias, residual, _ACTS[act],
        none if in_bias is None else in_bias)


def _activate(x: Tensor, act: Optional[str]) -> Tensor:
    if act == 'gelu':
        return F.gelu(x)
    return F.silu(x) if act == 'silu' else x


def fold_batchnorm(weight: Tensor, bias: Optional[Tensor],
                   norm: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Weight and bias of ``norm(conv(x))`` as one convolution, for an
    eval-mode norm (running statistics)."""
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight
    shift = -norm.running_mean * scale
    if norm.bias is not None:
        shift = shift + norm.bias
    if bias is not None:
        shift = shift + bias * scale
    return weight * scale.view(-1, *([1] * (weight.dim() - 1))), shift


class _DepthwiseFn(torch.autograd.Function):
    """dwconv(x) + bias with the C++ kernels both ways (CPU training):
    PyTorch's CPU depthwise backward was a fifth of a SparX-Mamba-T step."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor,
                bias: Optional[Tensor]) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _depthwise_kernel(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: Tensor):
        from mmsparx.ops.selective_scan import _cpu_kernel
        x, weight = ctx.saved_tensors
        need_weight = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        gx, gw, gb = _cpu_kernel().depthwise_conv_backward(
            grad.contiguous(), x, weight, ctx.needs_input_grad[0],
            need_weight)
        return (gx if ctx.needs_input_grad[0] else None,
                gw if ctx.needs_input_grad[1] else None,
                gb if ctx.has_bias and ctx.needs_input_grad[2] else None)


# Backward needs the pre-activation: kept, it is one more map written
# and read; recomputed, one more convolution per plane. Measured on one
# thread (fwd+bwd, batch 8): keeping wins or ties on maps below ~16 MiB
# (640 x 14 x 14 5x5: 6.0 vs 7.3 ms; 384 x 28 x 28 5x5: 14.3 vs 16.1;
# 1280 x 14 x 14 3x3: 11.8 both), but larger ones come from glibc as
# fresh pages each step, whose faults cost more than the recomputation
# (192 x 56 x 56 5x5: 48 vs 31 ms; 384 x 56 x 56 3x3: 102 vs 85).
# Measured before mmsparx.utils.malloc kept freed heap memory; blocks above
# glibc's 32 MiB cap (SparX-T's stage-1 ConvFFN at batch 8) are still
# fresh pages. A module constant: Dynamo cannot read an autograd
# Function's class attributes while it traces.
KEEP_PRE_MAX_BYTES = 16 << 20


class _DepthwiseActFn(torch.autograd.Function):
    """act(dwconv(x) + bias (+ x)) with the C++ kernels both ways (CPU
    training): the residual add, GELU / SiLU and their gradients ride the
    convolution's plane-by-plane passes instead of being four or five more
    passes over the map (and autograd's sum of the residual's gradient)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Optional[Tensor],
                residual: bool, act: int) -> Tensor:
        from mmsparx.ops.selective_scan import _cpu_kernel
        bias_arg = weight.new_empty(0) if bias is None else bias
        keep_pre = x.numel() * x.element_size() < KEEP_PRE_MAX_BYTES
        out, pre = _cpu_kernel().depthwise_conv_act_train(
            x, weight, bias_arg, residual, act, keep_pre)
        ctx.save_for_backward(x, weight, bias_arg, pre)
        ctx.residual, ctx.act = residual, act
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        from mmsparx.ops.selective_scan import _cpu_kernel
        x, weight, bias, pre = ctx.saved_tensors
        need_input = ctx.needs_input_grad[0]
        need_weight = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        gx, gw, gb = _cpu_kernel().depthwise_conv_act_backward(
            grad.contiguous(), x, weight, bias, pre, ctx.residual, ctx.act,
            need_input, need_weight)
        return (gx if need_input else None,
                gw if ctx.needs_input_grad[1] else None,
                gb if ctx.has_bias and ctx.needs_input_grad[2] else None,
                None, None)


class DepthwiseConv(nn.Conv2d):
    """A depthwise k x k convolution (``nn.Conv2d`` parameters and keys)
    whose ``fused`` call computes ``act(x + conv(x))`` or ``act(conv(x))``.

    On CPU in inference (no gradient recorded, float32, no autocast, maps of
    at least 28x28, 14x14 with the residual) that is one C++ pass over the
    map (``mmsparx/ops/csrc/depthwise_cpu.cpp``) instead of oneDNN's
    reorders plus separate add and activation passes.
    In CPU training (float32, no autocast) the whole ``fused`` function and
    its gradients are C++ kernels too (``forward`` alone: the convolution);
    everywhere else the same function from PyTorch ops.
    """

    def __init__(self, channels: int, kernel_size: int, bias: bool = True):
        super().__init__(channels, channels, kernel_size,
                         padding=kernel_size // 2, groups=channels,
                         bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        if self._trains_on_kernel(x):
            return _DepthwiseFn.apply(x, self.weight, self.bias)
        return super().forward(x)

    def fused(self, x: Tensor, residual: bool = False,
              act: Optional[str] = None,
              in_bias: Optional[Tensor] = None) -> Tensor:
        """``act(conv(u) (+ u))`` for ``u = x + in_bias`` (per channel: the
        bias of a product before this layer, which the inference kernel
        adds as it loads the map)."""
        if self._kernel_applies(x):
            return _depthwise_kernel(x, self.weight, self.bias, residual, act,
                                     in_bias)
        if in_bias is not None:
            x = x + in_bias.view(1, -1, 1, 1)
        if self._trains_on_kernel(x):
            return _DepthwiseActFn.apply(x, self.weight, self.bias, residual,
                                         _ACTS[act])
        out = self(x)
        return _activate(x + out if residual else out, act)

    def fused_bn(self, x: Tensor, norm: nn.BatchNorm2d,
                 act: Optional[str] = None) -> Tensor:
        """``act(norm(conv(x)))``; with ``norm`` in eval mode, where the
        inference kernel applies, one pass with the norm folded into the
        convolution's weight and bias."""
        norm_trains = torch.is_grad_enabled() and any(
            p.requires_grad for p in norm.parameters())
        if not norm.training and norm.running_var is not None and \
                not norm_trains and self._kernel_applies(x):
            weight, bias = fold_batchnorm(self.weight, self.bias, norm)
            return _depthwise_kernel(x, weight, bias, act=act)
        return _activate(norm(self(x)), act)

    # Smallest map (H * W) where the inference kernel beats oneDNN plus
    # separate add / norm / activation passes, measured on 2 threads at
    # SparX-T's sizes (batch 8, kernel / PyTorch time): at 14x14 0.5-0.8x
    # (3x3 with GELU, the residual or a folded BN; 5x5 + SiLU: 1.02x), at
    # 7x7 1.0-1.8x.
    MIN_KERNEL_PIXELS = 14 * 14

    def _cpu_float(self, x: Tensor) -> bool:
        """Where the kernels compute exactly this layer's function."""
        if x.device.type != 'cpu' or x.dtype != torch.float32 or \
                self.weight.dtype != torch.float32 or x.dim() != 4 or \
                not x.is_contiguous() or torch.jit.is_tracing() or \
                torch.is_autocast_enabled('cpu'):
            return False
        from mmsparx.ops.selective_scan import _cpu_kernel
        kernel = _cpu_kernel()
        return kernel is not None and hasattr(kernel,
                                              'depthwise_conv_backward')

    def _records_grad(self, x: Tensor) -> bool:
        return torch.is_grad_enabled() and (x.requires_grad or
                                            self.weight.requires_grad)

    def _kernel_applies(self, x: Tensor) -> bool:
        return x.dim() == 4 and \
            x.shape[-2] * x.shape[-1] >= self.MIN_KERNEL_PIXELS and \
            not self._records_grad(x) and self._cpu_float(x)

    def _trains_on_kernel(self, x: Tensor) -> bool:
        return self._records_grad(x) and self._cpu_float(x)


def pointwise_then_depthwise(
        pointwise: PointwiseConv, depthwise: DepthwiseConv, x: Tensor,
        residual: bool = False, act: Optional[str] = None) -> Tensor:
    """``depthwise.fused(pointwise(x), residual, act)``. In CPU inference
    the product runs without its bias, which the depthwise kernel adds as it
    loads the map, instead of a pass that writes the bias over the whole
    product's output before the product adds into it."""
    if not torch.is_grad_enabled() and depthwise._kernel_applies(x):
        return depthwise.fused(pointwise.product(x, None), residual, act,
                               in_bias=pointwise.bias)
    return depthwise.fused(pointwise(x), residual, act)


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per sample."""

    def __init__(self, prob: float = 0.0):
        super().__init__()
        self.prob = prob

    def forward(self, x: Tensor) -> Tensor:
        if self.prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.prob
        mask = x.new_empty((x.shape[0], ) + (1, ) * (x.dim() - 1))
        return x * mask.bernoulli_(keep) / keep

    def extra_repr(self) -> str:
        return f'prob={self.prob}'


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map."""

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape,
                            self.weight, self.bias,
                            self.eps).permute(0, 3, 1, 2)


class LayerScale(nn.Module):
    """Per-channel scale (init 1) and bias (init 0) on the identity branch;
    stored as a depthwise 1x1 conv, as the authors' checkpoints are."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim, 1, 1, 1))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)

    def add_to(self, branch: Tensor, x: Tensor) -> Tensor:
        """``self(x) + branch`` in two passes over the map instead of three."""
        return torch.addcmul(branch, x, self.weight.view(1, -1, 1, 1)).add_(
            self.bias.view(1, -1, 1, 1))


class ConvFFN(nn.Module):
    """1x1 (C -> hC), h + DWConv3x3(h), GELU, 1x1 (hC -> C)."""

    # CPU inference runs the batch in chunks whose hidden map stays below
    # glibc's largest mmap threshold (``mmsparx.utils.malloc``): larger blocks are
    # mapped afresh on every call, and faulting them in made SparX-T's
    # stage-1 ConvFFN (batch 8: 38.5 MB hidden maps) take 43 ms on 2
    # threads against 34 ms in chunks of 6 + 2 images (1-3 image chunks:
    # 40 ms, and 25-26 ms against 24 ms unchunked at stage 2).
    CHUNK_BYTES = MMAP_THRESHOLD

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = PointwiseConv(dim, hidden)
        self.dwconv = DepthwiseConv(hidden, 3)
        self.fc2 = PointwiseConv(hidden, dim)

    def forward(self, x: Tensor, norm: Optional[nn.Module] = None) -> Tensor:
        """The FFN of ``x``, or of ``norm(x)`` (the norm joins fc1's
        product in training, see :meth:`PointwiseConv.normed`)."""
        if norm is not None and not torch.is_grad_enabled():
            x, norm = norm(x), None
        chunk = self._chunk(x)
        if chunk >= x.shape[0]:
            return self._mlp(x, norm)
        return torch.cat([self._mlp(part) for part in x.split(chunk)])

    def _mlp(self, x: Tensor, norm: Optional[nn.Module] = None) -> Tensor:
        if not torch.is_grad_enabled():
            return self.fc2(pointwise_then_depthwise(
                self.fc1, self.dwconv, x, residual=True, act='gelu'))
        hidden = self.fc1(x) if norm is None else self.fc1.normed(x, norm)
        if self.dwconv._trains_on_kernel(hidden):
            return self.fc2(self.dwconv.fused(hidden, residual=True,
                                              act='gelu'))
        # GELU goes into fc2's product, which recomputes it in backward
        # from the pre-activation: two hidden maps kept instead of three.
        return self.fc2.product(self.dwconv.fused(hidden, residual=True),
                                self.fc2.bias, act='gelu')

    def _chunk(self, x: Tensor) -> int:
        """Images per chunk: all of them unless CPU inference with a
        hidden map above ``CHUNK_BYTES``; a traced graph (FLOP counts, ONNX
        export) keeps the whole batch, whose size must not be baked in."""
        if x.device.type != 'cpu' or x.dim() != 4 or torch.is_grad_enabled() \
                or torch.jit.is_tracing():
            return x.shape[0]
        image = self.fc1.out_channels * x[0, 0].numel() * x.element_size()
        return min(x.shape[0], max(1, (self.CHUNK_BYTES - 1) // image))
