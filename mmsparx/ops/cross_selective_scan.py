"""SS2D's scan as one op: four directions over a map, summed back onto it.

Everything SS2D computes before the scan (x_proj, dt_proj) is per pixel, so
it can stay in map order; only the scan itself needs the four sequence
orders. The generic path builds them (``cross_scan``, ``directional``),
scans with any backend and merges; on CPU the fused kernel takes every
input in map order and only its recurrences walk the map in each
direction's order, so the 4x copies and the merge never exist; on CUDA
the Triton cross scan (``triton_cross_scan.py``) does the same.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from mmsparx.ops import kernel_check, kernels
from mmsparx.ops.cross_scan import cross_merge, cross_scan
from mmsparx.ops.scan_choice import fused_pays, ss2d_backend
from mmsparx.ops.selective_scan import selective_scan


def directional(t: Tensor, height: int, width: int) -> Tensor:
    """(B, 4, ..., H*W) in map order -> each direction k in its own scan
    order (row-major, column-major, both reversed), as ``cross_scan``."""
    rows, cols = t[:, 0], t[:, 1]
    cols = cols.unflatten(-1, (height, width)).transpose(-2, -1).flatten(-2)
    return torch.stack([rows, cols, t[:, 2].flip(-1),
                        t[:, 3].unflatten(-1, (height, width))
                        .transpose(-2, -1).flatten(-2).flip(-1)], dim=1)


class _FusedCrossScan(torch.autograd.Function):
    """The fused CPU kernel: x (b, d, L), dt_low (b, 4, R, L), B, C
    (b, 4, N, L) and their gradients all in map order."""

    @staticmethod
    def forward(ctx, x, low, weight, A, B, C, D, delta_bias, softplus, h, w):
        ctx.save_for_backward(x, low, weight, A, B, C, D, delta_bias)
        ctx.args = (softplus, h, w)
        return kernels.cpu_kernel().cross_forward(x, low, weight, A, B, C, D,
                                                  delta_bias, softplus, h, w)

    @staticmethod
    def backward(ctx, grad):
        x, low, weight, A, B, C, D, delta_bias = ctx.saved_tensors
        gx, graw, gA, gB, gC, gD, gbias = kernels.cpu_kernel().cross_backward(
            grad.contiguous(), x, low, weight, A, B, C, D, delta_bias,
            *ctx.args)
        # raw delta = weight @ low per direction: two matmuls give the rest.
        glow = torch.matmul(weight.transpose(1, 2), graw)
        gweight = torch.matmul(graw, low.transpose(2, 3)).sum(0)
        return (gx, glow, gweight, gA, gB, gC, gD if D.numel() else None,
                gbias if delta_bias.numel() else None, None, None, None)


def cross_selective_scan(x: Tensor, dt_low: Tensor, dt_weight: Tensor,
                         A: Tensor, B: Tensor, C: Tensor,
                         D: Optional[Tensor] = None,
                         delta_bias: Optional[Tensor] = None,
                         delta_softplus: bool = False,
                         backend: str = 'auto',
                         out_dtype: Optional[torch.dtype] = None) -> Tensor:
    """Selective scan of (B, d, H, W) in SS2D's four directions, summed.

    The step of direction k is ``delta = dt_weight[k] @ dt_low[:, k]``
    (SS2D's dt_proj, taken in here so the fused kernel never writes the
    (B, 4, d, H*W) delta to memory).

    Args:
        x: (B, d, H, W) the scanned input u.
        dt_low: (B, 4, R, H*W); B, C: (B, 4, N, H*W); per direction, in map
            (row-major) order.
        dt_weight: (4, d, R). A: (4d, N); D, delta_bias: (4d,),
            direction-major as in SS2D.
        out_dtype: the result's dtype (None: x's).
    Returns:
        (B, d, H, W).
    """
    b, d, h, w = x.shape
    out_dtype = out_dtype or x.dtype
    length = h * w
    name = None if torch.jit.is_tracing() or kernels.exporting() else \
        ss2d_backend(x.device, backend)
    if name == 'triton' and kernel_check.can_check(x) and \
            not fused_cross_verified(x.device, x.dtype, A.shape[1],
                                     delta_softplus):
        name = None  # the generic path, on backends that pass their checks
    if name == 'triton':
        from mmsparx.ops.triton_cross_scan import triton_cross_selective_scan

        def fused():
            return triton_cross_selective_scan(
                x, dt_low, dt_weight, A, B, C, D, delta_bias,
                delta_softplus).to(out_dtype)

        def generic():
            return cross_selective_scan_generic(
                x, dt_low, dt_weight, A, B, C, D, delta_bias, delta_softplus,
                backend).to(out_dtype)

        return fused() if fused_pays(x, fused, generic) else generic()
    if name == 'fused_cpu':
        empty = x.new_empty(0, dtype=torch.float32)

        def f32(t):
            return empty if t is None else t.float().contiguous()

        with torch.autocast('cpu', enabled=False):
            y = _FusedCrossScan.apply(
                f32(x.reshape(b, d, length)), f32(dt_low), f32(dt_weight),
                f32(A), f32(B), f32(C), f32(D), f32(delta_bias),
                delta_softplus, h, w)
        return y.view(b, d, h, w).to(out_dtype)
    return cross_selective_scan_generic(x, dt_low, dt_weight, A, B, C, D,
                                        delta_bias, delta_softplus,
                                        backend).to(out_dtype)


def fused_cross_verified(device: torch.device, dtype: torch.dtype,
                         d_state: int, softplus: bool) -> bool:
    """Whether the fused Triton cross scan, both its per-chunk and its
    one-pass forward, agrees with the reference here (checked once per
    device, dtype, d_state and softplus; a failure is warned about)."""
    key = ('triton cross scan', str(device), dtype, d_state, softplus)
    if kernel_check.verified(key):
        return True  # every call after the first
    from mmsparx.ops import triton_cross_scan as fused

    def reference(*args):
        return cross_selective_scan_generic(*args, backend='reference')

    def run():
        for one_pass in (False, True):
            saved, fused.SEQUENTIAL = fused.SEQUENTIAL, one_pass
            try:
                problem = kernel_check.check(
                    fused.triton_cross_selective_scan, reference,
                    kernel_check.cross_inputs(d_state),
                    kernel_check.CROSS_ACTIVATIONS, device, dtype, softplus)
            finally:
                fused.SEQUENTIAL = saved
            if problem is not None:
                forward = 'one-pass' if one_pass else 'per-chunk'
                return f'{problem} ({forward} forward)'
        return None
    return kernel_check.passes(
        'fused Triton cross-scan', key, run,
        "the generic path (four sequences as tensors, the selective scan's "
        'checked backends)')


def cross_selective_scan_generic(x: Tensor, dt_low: Tensor, dt_weight: Tensor,
                                 A: Tensor, B: Tensor, C: Tensor,
                                 D: Optional[Tensor] = None,
                                 delta_bias: Optional[Tensor] = None,
                                 delta_softplus: bool = False,
                                 backend: str = 'auto') -> Tensor:
    """The four sequences built as tensors (``cross_scan``,
    ``directional``), one ``selective_scan`` on ``backend``, merged: any
    backend, and what tracing and ONNX export see."""
    b, d, h, w = x.shape
    length = h * w
    low, B, C = (directional(t, h, w) for t in (dt_low, B, C))
    delta = torch.matmul(dt_weight, low)  # (B, 4, d, L)
    y = selective_scan(
        cross_scan(x).reshape(b, 4 * d, length),
        delta.reshape(b, 4 * d, length), A, B.contiguous(), C.contiguous(),
        D, delta_bias, delta_softplus=delta_softplus, backend=backend)
    return cross_merge(y.view(b, 4, d, length), h, w)
