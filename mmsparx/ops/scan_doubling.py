"""The selective scan from element-wise ops, chunked with recursive
doubling across chunks: the export path.

ONNX has no scan of its own that runtimes run fast, and the Triton and C++
kernels cannot be exported. The linear recurrence ``x_t = a_t x_{t-1} + b_t``
is associative in its (a, b) pairs, so ceil(log2 L) whole-tensor steps

    x_t <- x_t + a_t * x_{t-s};   a_t <- a_t * a_{t-s};   s = 1, 2, 4, ...

(zero x and unit a before the start) leave x_t = the state at t. Here
the loop runs inside chunks of CHUNK tokens (all chunks at once), doubling
runs across the chunks' end states, and one pass adds each chunk's
entering state. It is exact (no approximation: the plain loop's sums in
another order) and safe on any sequence: only products of decays in
(0, 1] are formed, which can underflow to 0 (correctly) but never
overflow, where the ``chunked`` backend's exp(-cumsum) needs a
data-dependent chunk size. The steps depend only on L, so a traced graph
holds no data-dependent choice (and no loop or branch). Cost: about 3
element-wise passes over the (B, D, N, L) states plus a stack of the
CHUNK slices, against one pass for a fused loop.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor


# Tokens per chunk of the two-level form. Inside a chunk the recurrence runs
# token by token on every chunk at once (2 multiply-adds per element); the
# chunk-to-chunk carry runs by doubling on CHUNK-times smaller tensors. In
# ONNX Runtime (2 threads, 4 x 128 x 3136 states) that took 11-12 ms with
# 8 or 16 tokens a chunk, 31 ms with 32, and 21 ms for doubling over
# whole chunks of 16 (its shifts are Pad + Slice copies).
CHUNK = 8


def _doubling(decay: Tensor, drive: Tensor) -> Tensor:
    """States of the recurrence along the last axis by recursive doubling:
    ceil(log2 L) whole-tensor steps."""
    length = int(drive.shape[-1])
    state, shift = drive, 1
    while shift < length:
        state = state + decay * F.pad(state[..., :-shift], (shift, 0))
        if 2 * shift < length:  # the last step's decay product is unread
            decay = decay * F.pad(decay[..., :-shift], (shift, 0), value=1.0)
        shift *= 2
    return state


def linear_recurrence(decay: Tensor, drive: Tensor) -> Tensor:
    """States of ``x_t = decay_t * x_{t-1} + drive_t`` (x_{-1} = 0) along the
    last axis: token by token inside chunks of CHUNK tokens (all chunks at
    once, each from a zero state), by doubling across the chunks' end
    states and total decays, then one pass adding each chunk's entering
    state times the decay accumulated since the chunk began."""
    # A Python int: the pads and chunk shapes are constants of a traced
    # graph (its sequence length is fixed), where traced size arithmetic
    # left ONNX Runtime's shape inference with incompatible dimensions.
    length = int(drive.shape[-1])
    chunks = -(-length // CHUNK)
    pad = chunks * CHUNK - length
    if pad:  # unit decay and no input after the end change nothing before
        decay = F.pad(decay, (0, pad), value=1.0)
        drive = F.pad(drive, (0, pad))
    decay = decay.unflatten(-1, (chunks, CHUNK))
    drive = drive.unflatten(-1, (chunks, CHUNK))
    states, totals = [drive[..., 0]], [decay[..., 0]]
    for t in range(1, CHUNK):
        states.append(torch.addcmul(drive[..., t], decay[..., t], states[-1]))
        totals.append(decay[..., t] * totals[-1])
    state, total = torch.stack(states, -1), torch.stack(totals, -1)
    if chunks > 1:
        ends = _doubling(total[..., -1], state[..., -1])
        entering = F.pad(ends[..., :-1], (1, 0))
        state = torch.addcmul(state, total, entering.unsqueeze(-1))
    return state.flatten(-2)[..., :length]


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
            # softplus as max(x, 0) + log1p(exp(-|x|)): the same function
            # (5e-7 apart on N(0, 9) inputs), 2.8x faster in ONNX Runtime
            # than its Softplus op on SparX-T's stage-1 deltas.
            delta = torch.relu(delta) + torch.log1p(torch.exp(-delta.abs()))
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
