"""Depthwise convolutions on the fused C++ kernels (bias, residual,
activation and an eval-mode BatchNorm folded into one pass), and the
1x1 -> depthwise pair whose bias the kernel adds as it loads the map."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from mmsparx.models.layers.activations import KERNEL_CODES, activate
from mmsparx.models.layers.pointwise import PointwiseConv
from mmsparx.ops import kernels


def _depthwise_kernel(x: Tensor, weight: Tensor, bias: Optional[Tensor],
                      residual: bool = False, act: Optional[str] = None,
                      in_bias: Optional[Tensor] = None) -> Tensor:
    """The C++ inference kernel ``depthwise_conv_act``; it takes empty
    tensors where a bias is absent."""
    none = x.new_empty(0)
    return kernels.cpu_kernel().depthwise_conv_act(
        x, weight, none if bias is None else bias, residual, KERNEL_CODES[act],
        none if in_bias is None else in_bias)


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
        x, weight = ctx.saved_tensors
        need_weight = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        gx, gw, gb = kernels.cpu_kernel().depthwise_conv_backward(
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
        bias_arg = weight.new_empty(0) if bias is None else bias
        keep_pre = x.numel() * x.element_size() < KEEP_PRE_MAX_BYTES
        out, pre = kernels.cpu_kernel().depthwise_conv_act_train(
            x, weight, bias_arg, residual, act, keep_pre)
        ctx.save_for_backward(x, weight, bias_arg, pre)
        ctx.residual, ctx.act = residual, act
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight, bias, pre = ctx.saved_tensors
        need_input = ctx.needs_input_grad[0]
        need_weight = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        gx, gw, gb = kernels.cpu_kernel().depthwise_conv_act_backward(
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
                                         KERNEL_CODES[act])
        out = self(x)
        return activate(x + out if residual else out, act)

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
        return activate(norm(self(x)), act)

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
        kernel = kernels.cpu_kernel()
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
