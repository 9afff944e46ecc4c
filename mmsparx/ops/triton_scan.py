"""The selective scan in Triton: the GPU path that needs no compiled
extension (mamba-ssm absent or built for another CUDA).

A program owns one batch element and a block of channels (inside one group
of B/C) and walks the sequence in chunks of T tokens. Inside a chunk the
recurrence ``h_t = a_t h_{t-1} + b_t`` is an associative scan over
``(a, b)`` pairs; the carry between chunks is one state per channel. The
backward recomputes the chunk-entry states (one forward pass), then runs
the adjoint recurrence ``g_t = C_t dy_t + a_{t+1} g_{t+1}`` as a reverse
scan. Only the core ``y = sum_n C h`` over float32 u, delta, A, B, C is
here; softplus, the delta bias and the D skip stay PyTorch ops around it,
so autograd differentiates them.

With ``TRITON_INTERPRET=1`` (set before import) the same kernels run on CPU
tensors through Triton's interpreter: that is how the tests check them on
machines without a GPU.
"""
from __future__ import annotations

import os
from typing import Tuple

import torch
from torch import Tensor

import triton
import triton.language as tl

INTERPRETED = os.environ.get('TRITON_INTERPRET') == '1'


@triton.jit
def _linear_combine(a_left, b_left, a_right, b_right):
    # Two steps h -> a h + b composed: left first, then right.
    return a_left * a_right, a_right * b_left + b_right


@triton.jit
def program_rows(dim, BLOCK_D: tl.constexpr):
    """(image, channels, rows image * dim + channel) of this program, the
    image and rows 64-bit: in 32 bits ``rows * length`` passes 2^31 at
    SparX-T's first stage on 800x1344 images (4d = 768 rows, L = 67,200)
    from batch 42 per GPU, reading and writing out of bounds."""
    image = tl.program_id(0).to(tl.int64)
    chan = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    return image, chan, image * dim + chan


@triton.jit
def row_offsets(rows, length, offs):
    """Offsets of ``rows`` x time steps ``offs`` in a (rows, length)
    tensor: (BLOCK_D, T)."""
    return rows[:, None] * length + offs[None, :]


@triton.jit
def _chunk(u_ptr, dt_ptr, b_ptr, rows, offs, t_mask, mask, a, length):
    """One chunk of u, delta, decay exp(delta a), drive delta B u."""
    ptrs = row_offsets(rows, length, offs)
    u = tl.load(u_ptr + ptrs, mask=mask, other=0.0)
    dt = tl.load(dt_ptr + ptrs, mask=mask, other=0.0)
    b = tl.load(b_ptr + offs, mask=t_mask, other=0.0)
    # Padding steps keep the state: decay 1, drive 0.
    decay = tl.where(mask, tl.exp(dt * a[:, None]), 1.0)
    drive = tl.where(mask, dt * b[None, :] * u, 0.0)
    return u, dt, b, decay, drive


@triton.jit
def _scan_fwd_kernel(u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, y_ptr, dim, length,
                     state, groups, per_group, BLOCK_D: tl.constexpr,
                     T: tl.constexpr):
    pid_b, chan, rows = program_rows(dim, BLOCK_D)
    pid_d = tl.program_id(1)
    d_mask = chan < dim
    group = (pid_d * BLOCK_D) // per_group
    steps = tl.arange(0, T)
    last = steps[None, :] == T - 1
    for n in range(state):
        a = tl.load(A_ptr + chan * state + n, mask=d_mask, other=0.0)
        bc_base = ((pid_b * groups + group) * state + n) * length
        h = tl.zeros([BLOCK_D], dtype=tl.float32)
        for start in range(0, length, T):
            offs = start + steps
            t_mask = offs < length
            mask = d_mask[:, None] & t_mask[None, :]
            u, dt, b, decay, drive = _chunk(u_ptr, dt_ptr, B_ptr + bc_base,
                                            rows, offs, t_mask, mask, a,
                                            length)
            acc_a, acc_b = tl.associative_scan((decay, drive), 1,
                                               _linear_combine)
            hs = acc_a * h[:, None] + acc_b
            c = tl.load(C_ptr + bc_base + offs, mask=t_mask, other=0.0)
            y_ptrs = y_ptr + row_offsets(rows, length, offs)
            y = tl.load(y_ptrs, mask=mask, other=0.0)
            tl.store(y_ptrs, y + c[None, :] * hs, mask=mask)
            h = tl.sum(tl.where(last, hs, 0.0), axis=1)
        # The next state re-reads y: other warps' stores must have landed.
        tl.debug_barrier()


@triton.jit
def _scan_bwd_kernel(u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, gy_ptr, h_ptr,
                     gu_ptr, gdt_ptr, gA_ptr, gB_ptr, gC_ptr, dim, length,
                     state, groups, per_group, chunks,
                     BLOCK_D: tl.constexpr, T: tl.constexpr):
    pid_b, chan, rows = program_rows(dim, BLOCK_D)
    pid_d = tl.program_id(1)
    d_mask = chan < dim
    group = (pid_d * BLOCK_D) // per_group
    steps = tl.arange(0, T)
    first = steps[None, :] == 0
    last = steps[None, :] == T - 1
    for n in range(state):
        a = tl.load(A_ptr + chan * state + n, mask=d_mask, other=0.0)
        bc_base = ((pid_b * groups + group) * state + n) * length
        # Pass 1: the state entering every chunk.
        h = tl.zeros([BLOCK_D], dtype=tl.float32)
        for k in range(0, chunks):
            offs = k * T + steps
            t_mask = offs < length
            mask = d_mask[:, None] & t_mask[None, :]
            tl.store(h_ptr + (rows * state + n) * chunks + k, h, mask=d_mask)
            u, dt, b, decay, drive = _chunk(u_ptr, dt_ptr, B_ptr + bc_base,
                                            rows, offs, t_mask, mask, a,
                                            length)
            acc_a, acc_b = tl.associative_scan((decay, drive), 1,
                                               _linear_combine)
            h = tl.sum(tl.where(last, acc_a * h[:, None] + acc_b, 0.0),
                       axis=1)
        tl.debug_barrier()  # pass 2 reads what other warps stored
        # Pass 2, last chunk first: carry = a_{t+1} g_{t+1} from the right.
        carry = tl.zeros([BLOCK_D], dtype=tl.float32)
        grad_a = tl.zeros([BLOCK_D], dtype=tl.float32)
        for i in range(0, chunks):
            k = chunks - 1 - i
            offs = k * T + steps
            t_mask = offs < length
            mask = d_mask[:, None] & t_mask[None, :]
            h_in = tl.load(h_ptr + (rows * state + n) * chunks + k,
                           mask=d_mask, other=0.0)
            u, dt, b, decay, drive = _chunk(u_ptr, dt_ptr, B_ptr + bc_base,
                                            rows, offs, t_mask, mask, a,
                                            length)
            acc_a, acc_b = tl.associative_scan((decay, drive), 1,
                                               _linear_combine)
            hs = acc_a * h_in[:, None] + acc_b
            # h_{t-1}: the same scan over the chunk shifted by one step,
            # seeded with the entering state.
            prev_offs = offs - 1
            p_t_mask = (prev_offs >= 0) & (prev_offs < length)
            p_mask = d_mask[:, None] & p_t_mask[None, :]
            _, _, _, p_decay, p_drive = _chunk(
                u_ptr, dt_ptr, B_ptr + bc_base, rows, prev_offs, p_t_mask,
                p_mask, a, length)
            p_drive = tl.where(first, h_in[:, None], p_drive)
            p_decay = tl.where(first, 1.0, p_decay)
            _, h_prev = tl.associative_scan((p_decay, p_drive), 1,
                                            _linear_combine)
            # a_{t+1}: the next step's decay (the chunk's last uses carry).
            next_offs = offs + 1
            n_t_mask = next_offs < length
            n_mask = d_mask[:, None] & n_t_mask[None, :]
            n_dt = tl.load(dt_ptr + row_offsets(rows, length, next_offs),
                           mask=n_mask, other=0.0)
            n_decay = tl.where(n_mask & ~last, tl.exp(n_dt * a[:, None]),
                               1.0)
            gy = tl.load(gy_ptr + row_offsets(rows, length, offs),
                         mask=mask, other=0.0)
            c = tl.load(C_ptr + bc_base + offs, mask=t_mask, other=0.0)
            src = gy * c[None, :] + tl.where(last, carry[:, None], 0.0)
            _, g = tl.associative_scan((n_decay, src), 1, _linear_combine,
                                       reverse=True)
            g = tl.where(mask, g, 0.0)
            ptrs = row_offsets(rows, length, offs)
            gu = tl.load(gu_ptr + ptrs, mask=mask, other=0.0)
            tl.store(gu_ptr + ptrs, gu + g * dt * b[None, :], mask=mask)
            gdt = tl.load(gdt_ptr + ptrs, mask=mask, other=0.0)
            tl.store(gdt_ptr + ptrs, gdt + g * (
                a[:, None] * decay * h_prev + b[None, :] * u), mask=mask)
            grad_a += tl.sum(g * dt * decay * h_prev, axis=1)
            # B and C are shared by the block's channels: sum, then add.
            tl.atomic_add(gB_ptr + bc_base + offs,
                          tl.sum(g * dt * u, axis=0), mask=t_mask)
            tl.atomic_add(gC_ptr + bc_base + offs,
                          tl.sum(tl.where(mask, gy * hs, 0.0), axis=0),
                          mask=t_mask)
            carry = tl.sum(tl.where(first, decay * g, 0.0), axis=1)
        tl.atomic_add(gA_ptr + chan * state + n, grad_a, mask=d_mask)
        # gu and gdt are read back for the next state: a warp may not run
        # ahead of another's stores (the interpreter, one thread, never
        # does; on a GPU this was the wrong delta gradient for d_state > 1).
        tl.debug_barrier()


def _launch_shape(dim: int, per_group: int, length: int):
    block = 16
    while per_group % block:
        block //= 2  # a block never straddles two groups of B and C
    chunk = max(16, min(64, triton.next_power_of_2(length)))
    return block, chunk, (triton.cdiv(dim, block))


@torch.library.custom_op('mmsparx::scan_fwd', mutates_args=())
def scan_fwd(u: Tensor, dt: Tensor, A: Tensor, B: Tensor,
             C: Tensor) -> Tensor:
    """y = sum_n C_n h_n for float32 contiguous u, delta (b, d, l), A (d, n),
    B, C (b, g, n, l). A ``torch.library`` op, so that ``torch.compile``
    keeps it whole and fake tensors can stand in for it."""
    batch, dim, length = u.shape
    state, groups = A.shape[1], B.shape[1]
    block, chunk, blocks = _launch_shape(dim, dim // groups, length)
    y = torch.zeros_like(u)
    _scan_fwd_kernel[(batch, blocks)](
        u, dt, A, B, C, y, dim, length, state, groups, dim // groups,
        BLOCK_D=block, T=chunk)
    return y


@scan_fwd.register_fake
def _(u, dt, A, B, C):
    return torch.empty_like(u)


@torch.library.custom_op('mmsparx::scan_bwd', mutates_args=())
def scan_bwd(grad: Tensor, u: Tensor, dt: Tensor, A: Tensor, B: Tensor,
             C: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients of u, delta, A, B, C (float32) for :func:`scan_fwd`."""
    batch, dim, length = u.shape
    state, groups = A.shape[1], B.shape[1]
    block, chunk, blocks = _launch_shape(dim, dim // groups, length)
    chunks = triton.cdiv(length, chunk)
    entering = u.new_empty(batch, dim, state, chunks)
    gu, gdt = torch.zeros_like(u), torch.zeros_like(dt)
    gA = torch.zeros_like(A)
    gB, gC = torch.zeros_like(B), torch.zeros_like(C)
    _scan_bwd_kernel[(batch, blocks)](
        u, dt, A, B, C, grad.float().contiguous(), entering, gu, gdt, gA,
        gB, gC, dim, length, state, groups, dim // groups, chunks,
        BLOCK_D=block, T=chunk)
    return gu, gdt, gA, gB, gC


@scan_bwd.register_fake
def _(grad, u, dt, A, B, C):
    return (torch.empty_like(u), torch.empty_like(dt), torch.empty_like(A),
            torch.empty_like(B), torch.empty_like(C))


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad):
    return scan_bwd(grad, *ctx.saved_tensors)


scan_fwd.register_autograd(_backward, setup_context=_setup_context)


def selective_scan_triton(u: Tensor, delta: Tensor, A: Tensor, B: Tensor,
                          C: Tensor, D: Tensor | None = None,
                          delta_bias: Tensor | None = None,
                          delta_softplus: bool = False) -> Tensor:
    """The selective scan with the Triton kernels (same contract as
    ``selective_scan_reference``)."""
    from mmsparx.ops.kernels import prepare_scan_inputs
    dtype = u.dtype
    with torch.autocast(u.device.type, enabled=False):
        u, delta, A = prepare_scan_inputs(u, delta, A, B, delta_bias,
                                          delta_softplus)
        y = scan_fwd(u.contiguous(), delta.contiguous(), A.contiguous(),
                     B.float().contiguous(), C.float().contiguous())
        if D is not None:
            y = torch.addcmul(y, u, D.float()[:, None])
    return y.to(dtype)
