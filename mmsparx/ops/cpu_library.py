"""The C++ CPU kernels as ``torch.library`` ops, for ``torch.compile``.

Eager code calls the pybind functions directly (a custom op's dispatch
costs tens of microseconds a call, hundreds of calls a step). Under
``torch.compile`` Dynamo cannot trace into a pybind function and would break
the graph at every scan and depthwise convolution; these ops, with their
fake (shape-only) implementations, keep the graph whole, so Inductor fuses
the PyTorch ops around them. :func:`compiled_kernels` is what
``_cpu_kernel()`` returns while Dynamo traces: the same method names as the
extension module.

A kernel may return an undefined tensor for a gradient nobody asked for;
an op cannot, so those come back as empty tensors (callers drop them).
"""
from __future__ import annotations

from types import ModuleType, SimpleNamespace
from typing import List, Optional

import torch
from torch import Tensor

_NO_ACT = 0  # ``KERNEL_CODES[None]`` in models/layers/activations.py
_registered: list = []


def _defined(tensors, like: Tensor) -> List[Tensor]:
    empty = like.new_empty(0)
    return [empty if t is None else t for t in tensors]


def _grads_like(x: Tensor, weight: Tensor, need_input: bool,
                need_weight: bool) -> List[Tensor]:
    """Fake gradients of a depthwise convolution's x, weight and bias."""
    empty = x.new_empty(0)
    return [torch.empty_like(x) if need_input else empty,
            x.new_empty(weight.shape) if need_weight else empty,
            x.new_empty(weight.shape[0]) if need_weight else empty]


def _register(kernel: ModuleType) -> None:
    lib = 'mmsparx::cpu_'

    @torch.library.custom_op(lib + 'scan_fwd', mutates_args=())
    def scan_fwd(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                 D: Tensor, bias: Tensor, softplus: bool) -> Tensor:
        return kernel.forward(u, delta, A, B, C, D, bias, softplus)

    @scan_fwd.register_fake
    def _(u, delta, A, B, C, D, bias, softplus):
        return torch.empty_like(u)

    @torch.library.custom_op(lib + 'scan_bwd', mutates_args=())
    def scan_bwd(grad: Tensor, u: Tensor, delta: Tensor, A: Tensor,
                 B: Tensor, C: Tensor, D: Tensor, bias: Tensor,
                 softplus: bool) -> List[Tensor]:
        return list(kernel.backward(grad, u, delta, A, B, C, D, bias,
                                    softplus))

    @scan_bwd.register_fake
    def _(grad, u, delta, A, B, C, D, bias, softplus):
        dim = u.shape[1]
        return [torch.empty_like(u), torch.empty_like(delta),
                torch.empty_like(A), torch.empty_like(B), torch.empty_like(C),
                u.new_empty(dim), u.new_empty(dim)]

    @torch.library.custom_op(lib + 'cross_fwd', mutates_args=())
    def cross_fwd(x: Tensor, low: Tensor, weight: Tensor, A: Tensor,
                  B: Tensor, C: Tensor, D: Tensor, bias: Tensor,
                  softplus: bool, h: int, w: int) -> Tensor:
        return kernel.cross_forward(x, low, weight, A, B, C, D, bias,
                                    softplus, h, w)

    @cross_fwd.register_fake
    def _(x, low, weight, A, B, C, D, bias, softplus, h, w):
        return torch.empty_like(x)

    @torch.library.custom_op(lib + 'cross_bwd', mutates_args=())
    def cross_bwd(grad: Tensor, x: Tensor, low: Tensor, weight: Tensor,
                  A: Tensor, B: Tensor, C: Tensor, D: Tensor, bias: Tensor,
                  softplus: bool, h: int, w: int) -> List[Tensor]:
        return list(kernel.cross_backward(grad, x, low, weight, A, B, C, D,
                                          bias, softplus, h, w))

    @cross_bwd.register_fake
    def _(grad, x, low, weight, A, B, C, D, bias, softplus, h, w):
        b, d, length = x.shape
        return [torch.empty_like(x), x.new_empty(b, 4, d, length),
                torch.empty_like(A), torch.empty_like(B), torch.empty_like(C),
                x.new_empty(4 * d), x.new_empty(4 * d)]

    @torch.library.custom_op(lib + 'dw_act', mutates_args=())
    def dw_act(x: Tensor, weight: Tensor, bias: Tensor, residual: bool,
               act: int, in_bias: Tensor) -> Tensor:
        return kernel.depthwise_conv_act(x, weight, bias, residual, act,
                                         in_bias)

    @dw_act.register_fake
    def _(x, weight, bias, residual, act, in_bias):
        return torch.empty_like(x)

    @torch.library.custom_op(lib + 'dw_bwd', mutates_args=())
    def dw_bwd(grad: Tensor, x: Tensor, weight: Tensor, need_input: bool,
               need_weight: bool) -> List[Tensor]:
        return _defined(kernel.depthwise_conv_backward(
            grad, x, weight, need_input, need_weight), x)

    @dw_bwd.register_fake
    def _(grad, x, weight, need_input, need_weight):
        return _grads_like(x, weight, need_input, need_weight)

    @torch.library.custom_op(lib + 'dw_act_train', mutates_args=())
    def dw_act_train(x: Tensor, weight: Tensor, bias: Tensor, residual: bool,
                     act: int, keep_pre: bool) -> List[Tensor]:
        return list(kernel.depthwise_conv_act_train(x, weight, bias,
                                                    residual, act, keep_pre))

    @dw_act_train.register_fake
    def _(x, weight, bias, residual, act, keep_pre):
        keeps = keep_pre and act != _NO_ACT
        return [torch.empty_like(x),
                torch.empty_like(x) if keeps else x.new_empty(0)]

    @torch.library.custom_op(lib + 'dw_act_bwd', mutates_args=())
    def dw_act_bwd(grad: Tensor, x: Tensor, weight: Tensor, bias: Tensor,
                   pre: Tensor, residual: bool, act: int, need_input: bool,
                   need_weight: bool) -> List[Tensor]:
        return _defined(kernel.depthwise_conv_act_backward(
            grad, x, weight, bias, pre, residual, act, need_input,
            need_weight), x)

    @dw_act_bwd.register_fake
    def _(grad, x, weight, bias, pre, residual, act, need_input,
          need_weight):
        return _grads_like(x, weight, need_input, need_weight)

    _registered.append(SimpleNamespace(
        forward=scan_fwd, backward=scan_bwd, cross_forward=cross_fwd,
        cross_backward=cross_bwd, depthwise_conv_act=dw_act,
        depthwise_conv_backward=dw_bwd, depthwise_conv_act_train=dw_act_train,
        depthwise_conv_act_backward=dw_act_bwd))


def compiled_kernels(
        kernel: Optional[ModuleType]) -> Optional[SimpleNamespace]:
    """The ops standing for ``kernel``'s functions (registered once, when
    ``selective_scan`` loads the kernel), or None without a kernel."""
    if kernel is None:
        return None
    if not _registered:
        _register(kernel)
    return _registered[0]
