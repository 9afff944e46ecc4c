"""The selective scan (Mamba's S6), one entry point for every machine.

For each channel d and state n, with ``delta = softplus(delta + bias)``::

    x_t = exp(delta_t * A) * x_{t-1} + delta_t * B_t * u_t
    y_t = sum_n C_t[n] * x_t[n] + D * u_t

Shapes follow mamba-ssm: u, delta (b, d, l); A (d, n); B, C (b, g, n, l)
with the d channels split into g equal groups; D, delta_bias (d,).

Backends (``BACKENDS``), picked per call by :func:`resolve_backend`:

* ``mamba_ssm``: the fused CUDA kernel, when the package imports and the
  tensors are on CUDA.
* ``triton``: Triton kernels (``triton_scan.py``), the GPU path without a
  compiled extension; on CPU only under ``TRITON_INTERPRET=1`` (tests).
* ``fused_cpu``: a C++ kernel (``mmsparx/ops/csrc``, built by ``make
  setup``) that reads each channel once and recomputes states in its
  backward; CPU tensors, when the extension was built.
* ``chunked``: PyTorch, vectorised over chunks of the sequence with a short
  loop across chunks; any device, autograd for the backward.
* ``doubling``: PyTorch element-wise ops only: the loop inside chunks of 8
  tokens, recursive doubling across them (``scan_doubling.py``); any
  device, and what ONNX export traces (:func:`onnx_export_mode`).
* ``reference``: the plain per-token loop the others are tested against.

The state is computed in float32 whatever autocast says: the recurrence
multiplies many decays together and half precision loses it.
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from mmsparx.ops import kernel_check, kernels
from mmsparx.ops.kernels import onnx_export_mode  # noqa: F401  (public here)
from mmsparx.ops.scan_doubling import selective_scan_doubling

BACKENDS = ('mamba_ssm', 'triton', 'fused_cpu', 'chunked', 'doubling',
            'reference')
BACKEND_ENV = 'MMSPARX_SCAN_BACKEND'
# The GPU kernels, checked against the reference on first use per device,
# dtype, d_state and softplus (``kernel_check``).
CHECKED_BACKENDS = ('mamba_ssm', 'triton')

# exp(-S) inside a chunk is kept below exp(CHUNK_EXP_LIMIT) so float32
# never overflows (max ~3e38 = exp(88.7)); see _choose_chunk.
CHUNK_EXP_LIMIT = 60.0


def _mamba_fn():
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:  # absent, or present without its CUDA build
        return None
    return selective_scan_fn


def _triton_fn():
    try:
        from mmsparx.ops.triton_scan import selective_scan_triton
    except Exception:  # no triton, or one that cannot initialise here
        return None
    return selective_scan_triton


def available_backends(device: str | torch.device = 'cpu') -> Tuple[str, ...]:
    """The backends that can run on ``device`` here, fastest first."""
    found = []
    kind = torch.device(device).type
    if kind == 'cuda' and _mamba_fn() is not None:
        found.append('mamba_ssm')
    if kind == 'cuda' and _triton_fn() is not None:
        found.append('triton')
    if kind == 'cpu' and kernels.cpu_kernel() is not None:
        found.append('fused_cpu')
    found += ['chunked', 'doubling']
    if kind == 'cpu' and os.environ.get('TRITON_INTERPRET') == '1' and \
            _triton_fn() is not None:
        found.append('triton')  # the interpreter: correct, not fast
    return tuple(found + ['reference'])


def resolve_backend(device: torch.device, requested: str = 'auto') -> str:
    """``requested`` (or ``$MMSPARX_SCAN_BACKEND``) checked against what
    runs on ``device``; ``'auto'`` takes the fastest. Logs each new choice.
    """
    requested = os.environ.get(BACKEND_ENV, requested) if \
        requested == 'auto' else requested
    usable = available_backends(device)
    if requested == 'auto':
        backend = usable[0]
    elif requested not in BACKENDS:
        raise ValueError(f'unknown scan backend {requested!r}; choose one '
                         f'of {BACKENDS} or "auto".')
    elif requested not in usable:
        raise RuntimeError(
            f'scan backend {requested!r} cannot run on {device} here '
            f'(usable: {usable}); mamba_ssm needs CUDA tensors and '
            f'`pip install -r requirements/cuda.txt`; triton needs CUDA '
            f'tensors (or TRITON_INTERPRET=1 on CPU); fused_cpu needs CPU '
            f'tensors and the extension `make setup` builds.')
    else:
        backend = requested
    kind = torch.device(device).type
    kernels.log_once(('selective scan', kind, backend),
                     f'mmsparx selective scan on {kind}: {backend} backend')
    return backend


def selective_scan_reference(u: Tensor, delta: Tensor, A: Tensor, B: Tensor,
                             C: Tensor, D: Optional[Tensor] = None,
                             delta_bias: Optional[Tensor] = None,
                             delta_softplus: bool = False) -> Tensor:
    """The recurrence, one token at a time: slow, obviously right."""
    dtype = u.dtype
    with torch.autocast(u.device.type, enabled=False):
        u, delta, A = kernels.prepare_scan_inputs(
            u, delta, A, B, delta_bias, delta_softplus)
        per_group = u.shape[1] // B.shape[1]
        B = B.float().repeat_interleave(per_group, dim=1)
        C = C.float().repeat_interleave(per_group, dim=1)
        state = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
        ys = []
        for t in range(u.shape[2]):
            step = delta[:, :, t, None]
            state = torch.exp(step * A) * state + \
                step * B[..., t] * u[:, :, t, None]
            ys.append((state * C[..., t]).sum(-1))
        y = torch.stack(ys, dim=-1)
        if D is not None:
            y = y + u * D.float()[:, None]
    return y.to(dtype)


def _choose_chunk(dA: Tensor, chunk: int, length: int) -> int:
    """The chunk size: at most ``chunk``, small enough that the in-chunk
    decay sum stays under CHUNK_EXP_LIMIT (1 always works: it is the plain
    loop), and splitting ``length`` evenly so little padding is needed."""
    steepest = -dA.amin().item() if dA.numel() else 0.0
    while chunk > 1 and steepest * chunk > CHUNK_EXP_LIMIT:
        chunk //= 2
    chunk = max(1, min(chunk, length))
    chunks = -(-length // chunk)
    return -(-length // chunks)


def _entering_states(decay: Tensor, local: Tensor) -> Tensor:
    """h_k = decay_k h_{k-1} + local_k over the last axis (chunks); returns
    the state entering each chunk, h_{k-1} (h_{-1} = 0)."""
    carry = decay.new_zeros(decay.shape[:-1])
    entering = []
    for k in range(decay.shape[-1]):
        entering.append(carry)
        carry = decay[..., k] * carry + local[..., k]
    return torch.stack(entering, dim=-1)


def selective_scan_chunked(u: Tensor, delta: Tensor, A: Tensor, B: Tensor,
                           C: Tensor, D: Optional[Tensor] = None,
                           delta_bias: Optional[Tensor] = None,
                           delta_softplus: bool = False,
                           chunk: int = 64) -> Tensor:
    """The scan vectorised over chunks of ``chunk`` tokens.

    Inside a chunk with cumulative decay S_t = sum_{s<=t} delta_s A (S <= 0)
    and E = exp(S): ``x_t = E_t * (h + cumsum_s(delta_s B_s u_s / E_s))``
    where h is the state entering the chunk; only the chunk-to-chunk carry
    of h is a Python loop (L / chunk steps on (b, d, n) tensors). B and C
    broadcast over their channel groups instead of being copied per channel.
    """
    dtype = u.dtype
    with torch.autocast(u.device.type, enabled=False):
        u, delta, A = kernels.prepare_scan_inputs(
            u, delta, A, B, delta_bias, delta_softplus)
        b, d, length = u.shape
        n, groups = A.shape[1], B.shape[1]
        # (b, d, n, l) with the sequence last, where cumsum is fastest.
        dA = delta[:, :, None, :] * A[:, :, None]
        dBu = ((delta * u).view(b, groups, d // groups, 1, length) *
               B.float()[:, :, None]).view(b, d, n, length)
        size = _choose_chunk(dA.detach(), chunk, length)
        chunks = -(-length // size)
        pad = chunks * size - length
        if pad:  # zero decay and input after the end change nothing before
            dA = F.pad(dA, (0, pad))
            dBu = F.pad(dBu, (0, pad))
        dA = dA.view(b, d, n, chunks, size)
        dBu = dBu.view(b, d, n, chunks, size)
        if size == 1:
            # x_t = exp(dA_t) x_{t-1} + dBu_t: the plain recurrence, which
            # avoids exp(S) / exp(S) when single steps decay that fast.
            decay = torch.exp(dA)
            entering = _entering_states(decay[..., 0], dBu[..., 0])
            state = dBu + decay * entering[..., None]
        else:
            decay = torch.exp(dA.cumsum(dim=-1))
            inner = (dBu / decay).cumsum(dim=-1)
            end_decay = decay[..., -1]
            entering = _entering_states(end_decay,
                                        end_decay * inner[..., -1])
            state = decay * (inner + entering[..., None])
        state = state.view(b, d, n, chunks * size)[..., :length]
        y = state.reshape(b, groups, d // groups, n, length) * \
            C.float()[:, :, None]
        # With one state (SparX) there is nothing to sum: skip that pass.
        y = (y.squeeze(3) if n == 1 else y.sum(dim=3)).reshape(b, d, length)
        if D is not None:
            y = torch.addcmul(y, u, D.float()[:, None])
    return y.to(dtype)


def _selective_scan_mamba(u, delta, A, B, C, D, delta_bias, delta_softplus):
    fn = _mamba_fn()
    with torch.autocast('cuda', enabled=False):
        # The kernel keeps its state in float32 and takes u/delta in half.
        return fn(u.contiguous(), delta.contiguous(), A.float().contiguous(),
                  B.contiguous(), C.contiguous(),
                  None if D is None else D.float(),
                  delta_bias=None if delta_bias is None else
                  delta_bias.float(), delta_softplus=delta_softplus)


class _FusedCPUScan(torch.autograd.Function):
    """The C++ kernel with its own backward (it recomputes the states)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, delta_softplus):
        ctx.save_for_backward(u, delta, A, B, C, D, delta_bias)
        ctx.delta_softplus = delta_softplus
        return kernels.cpu_kernel().forward(u, delta, A, B, C, D, delta_bias,
                                            delta_softplus)

    @staticmethod
    def backward(ctx, grad):
        u, delta, A, B, C, D, delta_bias = ctx.saved_tensors
        grads = kernels.cpu_kernel().backward(grad.contiguous(), u, delta, A,
                                              B, C, D, delta_bias,
                                              ctx.delta_softplus)
        gu, gdelta, gA, gB, gC, gD, gbias = grads
        return (gu, gdelta, gA, gB, gC, gD if D.numel() else None,
                gbias if delta_bias.numel() else None, None)


def _selective_scan_fused_cpu(u, delta, A, B, C, D, delta_bias,
                              delta_softplus):
    dtype = u.dtype
    empty = u.new_empty(0, dtype=torch.float32)

    def f32(t):
        return empty if t is None else t.float().contiguous()

    with torch.autocast('cpu', enabled=False):
        kernels.check_groups(u, B)
        y = _FusedCPUScan.apply(f32(u), f32(delta), f32(A), f32(B), f32(C),
                                f32(D), f32(delta_bias), delta_softplus)
    return y.to(dtype)


def _selective_scan_triton(*args):
    return _triton_fn()(*args)


_IMPLEMENTATIONS = {
    'mamba_ssm': _selective_scan_mamba,
    'triton': _selective_scan_triton,
    'fused_cpu': _selective_scan_fused_cpu,
    'chunked': selective_scan_chunked,
    'doubling': selective_scan_doubling,
    'reference': selective_scan_reference,
}


def verified_backend(name: str, device: torch.device, dtype: torch.dtype,
                     d_state: int, softplus: bool) -> str:
    """``name``, or where its kernel disagrees with the reference here the
    next usable backend that does not (warned about once)."""
    if kernel_check.verified((name, str(device), dtype, d_state, softplus)):
        return name  # every call after the first
    order = available_backends(device)
    order = [name] + [b for b in order if b != name]
    for i, candidate in enumerate(order):
        if candidate not in CHECKED_BACKENDS:
            return candidate

        def run(fn=_IMPLEMENTATIONS[candidate]):
            return kernel_check.check(
                fn, selective_scan_reference, kernel_check.scan_inputs(
                    d_state), kernel_check.SCAN_ACTIVATIONS, device, dtype,
                softplus)
        key = (candidate, str(device), dtype, d_state, softplus)
        if kernel_check.passes(f'{candidate} selective-scan', key, run,
                               f'the {order[i + 1]} backend'):
            return candidate
    return 'reference'


class SelectiveScanOp(torch.autograd.Function):
    """The scan as one traced op, so FLOP counters see (and price) it.

    Used only under ``torch.jit.trace``; training uses the backends directly.
    The counters price the op by its shapes, not by what runs inside: the
    C++ kernel where it runs (several times faster than ``chunked``).
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, delta_softplus):
        if u.device.type == 'cpu' and kernels.cpu_kernel() is not None:
            return _selective_scan_fused_cpu(u, delta, A, B, C, D,
                                             delta_bias, delta_softplus)
        return selective_scan_chunked(u, delta, A, B, C, D, delta_bias,
                                      delta_softplus)

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError('SelectiveScanOp is for tracing (FLOP counts); '
                           'train without torch.jit.trace.')


def selective_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor,
                   C: Tensor, D: Optional[Tensor] = None,
                   delta_bias: Optional[Tensor] = None,
                   delta_softplus: bool = False,
                   backend: str = 'auto') -> Tensor:
    """Run the selective scan on the best (or the named) backend.

    Returns y of shape (b, d, l) in ``u``'s dtype.
    """
    if u.dim() != 3 or B.dim() != 4 or A.dim() != 2:
        raise ValueError(
            'selective_scan expects u (b, d, l), A (d, n), B/C (b, g, n, l); '
            f'got u {tuple(u.shape)}, A {tuple(A.shape)}, B {tuple(B.shape)}')
    if kernels.exporting():
        return selective_scan_doubling(u, delta, A, B, C, D, delta_bias,
                                       delta_softplus)
    if torch.jit.is_tracing():
        return SelectiveScanOp.apply(u, delta, A, B, C, D, delta_bias,
                                     delta_softplus)
    name = resolve_backend(u.device, backend)
    if name in CHECKED_BACKENDS and kernel_check.can_check(u):
        name = verified_backend(name, u.device, u.dtype, A.shape[1],
                                delta_softplus)
    return _IMPLEMENTATIONS[name](u, delta, A, B, C, D, delta_bias,
                                  delta_softplus)


kernels.cpu_kernel()  # loaded (and its ops registered) before any tracing
