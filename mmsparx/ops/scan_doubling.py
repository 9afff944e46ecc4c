"""The selective scan by recursive doubling: the export path.

ONNX has no scan of its own that runtimes run fast, and the Triton and C++
kernels cannot be exported. The linear recurrence ``x_t = a_t x_{t-1} + b_t``
is associative in its (a, b) pairs, so ceil(log2 L) whole-tensor steps

    x_t <- x_t + a_t * x_{t-s};   a_t <- a_t * a_{t-s};   s = 1, 2, 4, ...

(zero x and unit a before the start) leave x_t = the state at t. It is
exact (no approximation, every order of summation the plain loop's up to
rounding) and safe on any sequence: only products of decays in (0, 1] are
formed, which can underflow to 0 (correctly) but never overflow, where the
``chunked`` backend's exp(-cumsum) needs a data-dependent chunk size. The
number of steps depends only on L, so a traced graph holds no
data-dependent choice. Cost: ~L log2 L multiply-adds against L for the
loop, all in wide element-wise passes (shifts are ONNX ``Pad`` ops).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def doubling_steps(length: int) -> int:
    """Steps that cover a sequence of ``length``: ceil(log2(length))."""
    return max(0, (length - 1).bit_length())


def linear_recurrence(decay: Tensor, drive: Tensor) -> Tensor:
    """States of ``x_t = decay_t * x_{t-1} + drive_t`` (x_{-1} = 0) along the
    last axis, in ``doubling_steps`` passes."""
    length = drive.shape[-1]
    state, shift = drive, 1
    while shift < length:
        state = state + decay * F.pad(state[..., :-shift], (shift, 0))
        if 2 * shift < length:  # the last step's decay product is unread
            decay = decay * F.pad(decay[..., :-shift], (shift, 0), value=1.0)
        shift *= 2
    return state


def selective_scan_doubling(u: Tensor, delta: Tensor, A: Tensor, B: Tensor,
                            C: Tensor, D: Optional[Tensor] = None,
                            delta_bias: Optional[Tensor] = None,
                            delta_softplus: bool = False) -> Tensor:
    """The selective scan (``selective_scan``'s arguments and result) from
    element-wise ops, pads and sums only: what ONNX export traces."""
    dtype = u.dtype
    # The state in float32 whatever autocast says (see selective_scan.py).
    with torch.autocast(u.device.type, enabled=False):
        u, delta, A = u.float(), delta.float(), A.float()
        if delta_bias is not None:
            delta = delta + delta_bias.float()[:, None]
        if delta_softplus:
            delta = F.softplus(delta)
        b, d, length = u.shape
        n, groups = A.shape[1], B.shape[1]
        if d % groups:
            raise ValueError(f'{d} channels cannot be split into {groups} '
                             f'groups of B and C')
        per_group = d // groups
        # (b, g, d/g, n, l): B and C broadcast over their group's channels.
        decay = torch.exp(delta[:, :, None, :] * A[:, :, None]).reshape(
            b, groups, per_group, n, length)
        drive = (delta * u).reshape(b, groups, per_group, 1, length) * \
            B.float()[:, :, None]
        state = linear_recurrence(decay, drive)
        y = (state * C.float()[:, :, None]).sum(dim=3).reshape(b, d, length)
        if D is not None:
            y = y + u * D.float()[:, None]
    return y.to(dtype)
