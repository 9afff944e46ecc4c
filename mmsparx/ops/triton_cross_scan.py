"""SS2D's four-direction selective scan as Triton kernels (the GPU path).

The generic path copies the map four times into scan order (stack, flip,
transpose), upcasts u and the (B, 4, d, L) step to float32, scans, flips
back and merges: most of its GPU time is those copies. Here every kernel
indexes the (B, d, H*W) map directly in each direction's order, computes the
step ``softplus(dt_weight @ dt_low + bias)`` in registers (the (B, 4, d, L)
step never exists in the forward), keeps the state in float32 and adds the
four directions' outputs straight into one float32 map.

The columns' directions read column-major copies of their inputs (one
transposing pass each), where a column's tokens are adjacent as a row's
are; the row-major map read with a stride is the alternative
(``TRANSPOSE_COLUMNS``).

Parallelism is along the sequence as well as over images and channels, so
that one large image fills the GPU. A program owns (image, direction,
block of channels, chunk of T tokens):

1. ``chunk_summary``: each chunk's total decay P and its end state S from
   a zero start (forward), or its adjoint summary (backward).
2. ``carry``: the states entering each chunk, ``h <- P h + S`` walked
   across chunks (left to right forward, right to left backward).
3. ``output`` / ``grads``: the chunk again, seeded with its entering
   state, writing y (forward) or every gradient (backward). The backward
   recomputes states instead of saving them.

The kernels themselves are in :mod:`mmsparx.ops.triton_cross_kernels`.

Where the images and channels alone fill the GPU (``_sequential``) the
forward is one pass: a program walks its whole sequence chunk by chunk,
the state in registers, and writes the entering states the backward reads.

The ops are registered with ``torch.library`` so ``torch.compile`` keeps
them as single nodes. With ``TRITON_INTERPRET=1`` (set before import) they
run on CPU tensors through Triton's interpreter, which is how machines
without a GPU test them; only a GPU proves them.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

import triton

from mmsparx.ops import triton_cross_kernels as kernels
from mmsparx.ops.triton_cross_kernels import DIRECTIONS


def launch_shape(d: int, length: int) -> Tuple[int, int, int]:
    """(channels per program, chunk length, chunks)."""
    chunk = max(16, min(64, triton.next_power_of_2(length)))
    block = 16 if d >= 16 else triton.next_power_of_2(d)
    return block, chunk, triton.cdiv(length, chunk)


# Columns (directions 1 and 3) read column-major copies of the map, the
# steps' low-rank inputs, B / C and, backward, the output gradient: a
# column's consecutive tokens are then adjacent in memory, as a row's are,
# where the row-major map puts them W elements apart (one memory sector
# per token loaded or added). Each copy is one transposing pass. False
# keeps the strided reads, for comparing the two on a GPU.
TRANSPOSE_COLUMNS = True


def _column_major(t: Tensor, height: int, width: int) -> Tensor:
    """(..., H*W) in row-major order -> a contiguous column-major copy."""
    return t.unflatten(-1, (height, width)).transpose(-1, -2).reshape(
        t.shape)


def _row_major(t: Tensor, height: int, width: int) -> Tensor:
    """The inverse of :func:`_column_major`."""
    return t.unflatten(-1, (width, height)).transpose(-1, -2).reshape(
        t.shape)


def _by_parity(rows: Tensor, cols: Tensor) -> Tensor:
    """(b, 4, ...): directions 0 and 2 from ``rows``, 1 and 3 from
    ``cols``."""
    return torch.stack([rows[:, 0], cols[:, 1], rows[:, 2], cols[:, 3]], 1)


def _maps(x: Tensor, low: Tensor, bc: Tensor, height: int, width: int):
    """([(x, low, bc) the rows read, the same the columns read], COLS_T)."""
    rows = (x, low, bc)
    if not TRANSPOSE_COLUMNS or height == 1 or width == 1:
        return [rows, rows], False
    return [rows, tuple(_column_major(t, height, width) for t in rows)], True


def _args(x: Tensor, low: Tensor, bc: Tensor, height: int, width: int):
    """Sizes, launch shape and the kernels' shared scalar arguments."""
    b, d, length = x.shape
    state = bc.shape[2] // 2
    block, chunk, chunks = launch_shape(d, length)
    scalars = (d, length, height, width, low.shape[2], chunks, low.stride(0),
               low.stride(1), low.stride(2), bc.stride(0), bc.stride(1),
               bc.stride(2), state)
    grid = (b, triton.cdiv(d, block), chunks)
    meta = dict(N=state, BD=block, T=chunk)
    return scalars, grid, meta


def _per_chunk_states(x: Tensor, bc: Tensor) -> Tensor:
    """An uninitialised float32 (b, 4, N, chunks, d): one state per image,
    direction, state index, chunk and channel; empty for one chunk."""
    b, d, length = x.shape
    chunks = launch_shape(d, length)[2]
    return x.new_empty(
        (b, DIRECTIONS, bc.shape[2] // 2, chunks, d) if chunks > 1 else 0,
        dtype=torch.float32)


def _carries(maps, weight, A, bias, gys, softplus, height, width, cols_t):
    """The state (``gys`` None) or adjoint carry (``gys``: the output
    gradient as the rows and the columns read it) entering each chunk,
    (b, 4, N, chunks, d) float32; empty for a one-chunk sequence."""
    x, _, bc = maps[0]
    _, grid, meta = _args(*maps[0], height, width)
    b, d, chunks, state = x.shape[0], x.shape[1], grid[2], meta['N']
    prod = _per_chunk_states(x, bc)
    if chunks == 1:
        return prod
    summary = torch.empty_like(prod)
    for direction in range(DIRECTIONS):
        xk, low, bc = maps[direction % 2]
        gy = None if gys is None else gys[direction % 2]
        kernels.chunk_summary[grid](
            xk, low, bc, weight, A, A if bias is None else bias,
            xk if gy is None else gy, prod, summary,
            *_args(xk, low, bc, height, width)[0], DIR=direction,
            HAS_BIAS=bias is not None, SOFTPLUS=softplus,
            ADJOINT=gy is not None, COLS_T=cols_t, **meta)
    entering = torch.empty_like(prod)
    block = 128
    kernels.carry[(b * DIRECTIONS * state, triton.cdiv(d, block))](
        prod, summary, entering, d, chunks, BD=block, REVERSE=gys is not None)
    return entering


def _flags(D, bias, entering, softplus, cols_t):
    return dict(HAS_BIAS=bias is not None, HAS_D=D is not None,
                HAS_ENTRY=entering.numel() > 0, SOFTPLUS=softplus,
                COLS_T=cols_t)


# Programs per SM (per direction's launch) from which each program walks its
# (image, channel block) through every chunk, the state carried in
# registers: one pass over the inputs instead of a summary pass, a carry
# pass and the output pass, which split the sequence so that few images
# still fill the GPU. A first guess, not yet timed on a GPU:
# ``benchmark.py ss2d``'s cross and cross-chunked paths compare the two.
SEQUENTIAL_PROGRAMS_PER_SM = 2
SEQUENTIAL: Optional[bool] = None  # None: by SEQUENTIAL_PROGRAMS_PER_SM


def _sequential(x: Tensor) -> bool:
    """Whether the forward walks whole sequences (see above); off the GPU
    (the interpreter) only where ``SEQUENTIAL`` says so."""
    if SEQUENTIAL is not None:
        return SEQUENTIAL
    if x.device.type != 'cuda':
        return False
    sms = torch.cuda.get_device_properties(x.device).multi_processor_count
    programs = x.shape[0] * triton.cdiv(x.shape[1],
                                        launch_shape(*x.shape[1:])[0])
    return programs >= SEQUENTIAL_PROGRAMS_PER_SM * sms


def _add_columns(total: Tensor, cols: Tensor, height: int,
                 width: int) -> None:
    """total (b, d, H*W) += ``cols``, the columns' column-major part."""
    b, d = total.shape[:2]
    total.view(b, d, height, width).add_(
        cols.view(b, d, width, height).transpose(-1, -2))


@torch.library.custom_op('mmsparx::cross_scan_fwd', mutates_args=())
def cross_scan_fwd(x: Tensor, low: Tensor, bc: Tensor, weight: Tensor,
                   A: Tensor, D: Optional[Tensor], bias: Optional[Tensor],
                   softplus: bool, height: int,
                   width: int) -> Tuple[Tensor, Tensor]:
    """(y float32 (b, d, L), states entering each chunk); see
    :func:`triton_cross_selective_scan` for the inputs."""
    maps, cols_t = _maps(x, low, bc, height, width)
    seq = _sequential(x)
    if seq:  # the states entering chunks: written by the output pass
        entering = _per_chunk_states(x, bc)
    else:
        entering = _carries(maps, weight, A, bias, None, softplus, height,
                            width, cols_t)
    ys = [torch.zeros(x.shape, device=x.device, dtype=torch.float32)]
    ys.append(torch.zeros_like(ys[0]) if cols_t else ys[0])
    for direction in range(DIRECTIONS):
        xk, lowk, bck = maps[direction % 2]
        scalars, grid, meta = _args(xk, lowk, bck, height, width)
        kernels.output[grid[:2] + (1, ) if seq else grid](
            xk, lowk, bck, weight, A, A if bias is None else bias,
            A if D is None else D, entering, ys[direction % 2], *scalars,
            DIR=direction, **_flags(D, bias, entering, softplus, cols_t),
            SEQ=seq, NP=triton.next_power_of_2(meta['N']), **meta)
    if cols_t:
        _add_columns(ys[0], ys[1], height, width)
    return ys[0], entering


@cross_scan_fwd.register_fake
def _(x, low, bc, weight, A, D, bias, softplus, height, width):
    return (x.new_empty(x.shape, dtype=torch.float32),
            _per_chunk_states(x, bc))


@torch.library.custom_op('mmsparx::cross_scan_bwd', mutates_args=())
def cross_scan_bwd(gy: Tensor, x: Tensor, low: Tensor, bc: Tensor,
                   weight: Tensor, A: Tensor, D: Optional[Tensor],
                   bias: Optional[Tensor], entering: Tensor, softplus: bool,
                   height: int, width: int
                   ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
                              Tensor]:
    """Gradients of x, low, bc, weight, A, D, bias (float32)."""
    b, d, length = x.shape
    maps, cols_t = _maps(x, low, bc, height, width)
    gy = gy.float().contiguous()
    gys = [gy, _column_major(gy, height, width) if cols_t else gy]
    carry = _carries(maps, weight, A, bias, gys, softplus, height, width,
                     cols_t)
    f32 = dict(device=x.device, dtype=torch.float32)
    gxs = [torch.zeros((b, d, length), **f32)]
    gxs.append(torch.zeros_like(gxs[0]) if cols_t else gxs[0])
    # The columns' step and B / C gradients land column-major (as they read).
    graw = torch.empty((b, DIRECTIONS, d, length), **f32)
    gA = torch.zeros(A.shape, **f32)
    gbc = torch.zeros(bc.shape, **f32)  # bc is dense: the same strides
    gD = torch.zeros(DIRECTIONS * d, **f32)
    gbias = torch.zeros(DIRECTIONS * d, **f32)
    for direction in range(DIRECTIONS):
        xk, lowk, bck = maps[direction % 2]
        scalars, grid, meta = _args(xk, lowk, bck, height, width)
        kernels.grads[grid](
            xk, lowk, bck, weight, A, A if bias is None else bias,
            A if D is None else D, entering, carry, gys[direction % 2],
            gxs[direction % 2], graw, gA, gbc, gD, gbias, *scalars,
            DIR=direction, **_flags(D, bias, entering, softplus, cols_t),
            **meta)
    low = low.float()
    if cols_t:
        _add_columns(gxs[0], gxs[1], height, width)
        low = _by_parity(low, maps[1][1].float())
    # raw step = weight[k] @ low[:, k]: two products give the rest, in the
    # layout graw has; the columns' low-rank gradient then turns back.
    gweight = torch.matmul(graw, low.transpose(2, 3)).sum(0)
    glow = torch.matmul(weight.float().transpose(1, 2), graw)
    if cols_t:
        glow = _by_parity(glow, _row_major(glow, height, width))
        gbc = _by_parity(gbc, _row_major(gbc, height, width))
    return gxs[0], glow, gbc, gweight, gA, gD, gbias


@cross_scan_bwd.register_fake
def _(gy, x, low, bc, weight, A, D, bias, entering, softplus, height, width):
    f32 = dict(dtype=torch.float32)
    b, d, length = x.shape
    return (x.new_empty(x.shape, **f32), low.new_empty(low.shape, **f32),
            bc.new_empty(bc.shape, **f32),
            weight.new_empty(weight.shape, **f32), A.new_empty(A.shape, **f32),
            x.new_empty(DIRECTIONS * d, **f32),
            x.new_empty(DIRECTIONS * d, **f32))


def _setup_context(ctx, inputs, output):
    x, low, bc, weight, A, D, bias, softplus, height, width = inputs
    ctx.save_for_backward(x, low, bc, weight, A, D, bias, output[1])
    ctx.args = (softplus, height, width)
    ctx.mark_non_differentiable(output[1])


def _backward(ctx, gy, _):
    x, low, bc, weight, A, D, bias, entering = ctx.saved_tensors
    gx, glow, gbc, gweight, gA, gD, gbias = cross_scan_bwd(
        gy, x, low, bc, weight, A, D, bias, entering, *ctx.args)
    return (gx.to(x.dtype), glow.to(low.dtype), gbc.to(bc.dtype),
            gweight.to(weight.dtype), gA.to(A.dtype),
            None if D is None else gD.to(D.dtype),
            None if bias is None else gbias.to(bias.dtype), None, None, None)


cross_scan_fwd.register_autograd(_backward, setup_context=_setup_context)


def triton_cross_selective_scan(x: Tensor, dt_low: Tensor, dt_weight: Tensor,
                                A: Tensor, B: Tensor, C: Tensor,
                                D: Optional[Tensor] = None,
                                delta_bias: Optional[Tensor] = None,
                                delta_softplus: bool = False) -> Tensor:
    """``cross_selective_scan`` on the Triton kernels: x (b, d, H, W) in
    any float dtype, dt_low (b, 4, R, HW) (a strided view is fine), B, C
    (b, 4, N, HW); returns the float32 (b, d, H, W) sum of the four
    directions (GroupNorm, which follows in SS2D, runs in float32)."""
    b, d, height, width = x.shape
    bc = torch.cat([B, C], dim=2).contiguous()
    if dt_low.stride(-1) != 1:
        dt_low = dt_low.contiguous()
    y, _ = cross_scan_fwd(
        x.contiguous().view(b, d, height * width), dt_low, bc,
        dt_weight.contiguous(), A.float().contiguous(),
        None if D is None else D.float().contiguous(),
        None if delta_bias is None else delta_bias.float().contiguous(),
        delta_softplus, height, width)
    return y.view(b, d, height, width)
