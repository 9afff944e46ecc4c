"""The Triton kernels of the four-direction selective scan (device code);
:mod:`mmsparx.ops.triton_cross_scan` launches them and holds the steps
they take (chunk summaries, carries across chunks, outputs, gradients)."""
from __future__ import annotations

import triton
import triton.language as tl

DIRECTIONS = 4
_DIRS = tl.constexpr(DIRECTIONS)  # what kernels may read of a global


@triton.jit
def _combine(a_left, b_left, a_right, b_right):
    # Two steps h -> a h + b composed: left first, then right.
    return a_left * a_right, a_right * b_left + b_right


@triton.jit
def _mul(a, b):
    return a * b


@triton.jit
def image_index():
    """This program's image (grid axis 0), 64-bit: every offset formed from
    it is then 64-bit. In 32 bits ``(b * 4 * d) * L`` (the raw step's
    gradient) passes 2^31 at SparX-T's first stage on 800x1344 images
    (d = 192, L = 67,200) from batch 42 per GPU: writes out of bounds."""
    return tl.program_id(0).to(tl.int64)


@triton.jit
def map_offsets(image, d, chan, L, p):
    """Offsets of the (d, L) map of ``image`` at channels ``chan`` and
    map indices ``p``: (BD, T), 64-bit with :func:`image_index`."""
    return (image * d + chan)[:, None] * L + p[None, :]


@triton.jit
def raw_step_offsets(image, DIR: tl.constexpr, d, chan, L, p):
    """Offsets of direction DIR's raw-step gradient, (b, 4, d, L)."""
    return ((image * _DIRS + DIR) * d + chan)[:, None] * L + p[None, :]


@triton.jit
def _map_index(s, L, H, W, DIR: tl.constexpr, COLS_T: tl.constexpr):
    """Sequence index s of direction DIR -> index in the map it reads:
    0 rows, 1 columns, 2 rows reversed, 3 columns reversed. The columns'
    map is the row-major one, or with ``COLS_T`` its column-major copy,
    where a column's tokens are adjacent as a row's are."""
    if DIR >= 2:
        s = L - 1 - s
    if DIR % 2 == 1:
        if not COLS_T:
            s = (s % H) * W + s // H
    return s


@triton.jit
def _softplus(z):
    # max(z, 0) + log1p(exp(-|z|)), log1p through log(1 + e) corrected by
    # e / ((1 + e) - 1), so tiny e keeps its precision.
    e = tl.exp(-tl.abs(z))
    one_e = 1.0 + e
    log1p = tl.where(one_e == 1.0, e,
                     tl.log(one_e) * e / tl.where(one_e == 1.0, 1.0,
                                                  one_e - 1.0))
    return tl.maximum(z, 0.0) + log1p


@triton.jit
def _raw_step(low_ptr, w_ptr, bias_ptr, s_low_r, p, t_mask, chan, d_mask,
              R, BD: tl.constexpr, T: tl.constexpr, HAS_BIAS: tl.constexpr):
    """dt_weight[k] @ dt_low[b, k] (+ bias) at map positions p: (BD, T)."""
    acc = tl.zeros([BD, T], dtype=tl.float32)
    for r in range(R):
        w = tl.load(w_ptr + chan * R + r, mask=d_mask, other=0.0)
        low = tl.load(low_ptr + r * s_low_r + p, mask=t_mask, other=0.0)
        acc += w.to(tl.float32)[:, None] * low.to(tl.float32)[None, :]
    if HAS_BIAS:
        bias = tl.load(bias_ptr + chan, mask=d_mask, other=0.0)
        acc += bias[:, None]
    return acc


@triton.jit
def _step(low_ptr, w_ptr, bias_ptr, s_low_r, p, t_mask, chan, d_mask, R,
          BD: tl.constexpr, T: tl.constexpr, HAS_BIAS: tl.constexpr,
          SOFTPLUS: tl.constexpr):
    """(step, raw step): softplus(raw) or raw itself, float32 (BD, T)."""
    raw = _raw_step(low_ptr, w_ptr, bias_ptr, s_low_r, p, t_mask, chan,
                    d_mask, R, BD, T, HAS_BIAS)
    if SOFTPLUS:
        return _softplus(raw), raw
    return raw, raw


@triton.jit
def chunk_summary(x_ptr, low_ptr, bc_ptr, w_ptr, a_ptr, bias_ptr, gy_ptr,
                  p_out, s_out, d, L, H, W, R, chunks, s_low_b, s_low_k,
                  s_low_r, s_bc_b, s_bc_k, s_bc_n, c_off, DIR: tl.constexpr,
                  N: tl.constexpr, BD: tl.constexpr, T: tl.constexpr,
                  HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                  ADJOINT: tl.constexpr, COLS_T: tl.constexpr):
    """Per chunk and state: the decay product P and, from a zero start,
    the end state S (forward) or the adjoint summary a_first * g_first
    (``ADJOINT``: g_t = C_t dy_t + a_{t+1} g_{t+1}, walked last to first).
    """
    pid_b = image_index()
    pid_d = tl.program_id(1)
    pid_c = tl.program_id(2)
    chan = pid_d * BD + tl.arange(0, BD)
    d_mask = chan < d
    j = tl.arange(0, T)
    if ADJOINT:
        s = pid_c * T + (T - 1 - j)  # the chunk read last to first
    else:
        s = pid_c * T + j
    t_mask = s < L
    mask = d_mask[:, None] & t_mask[None, :]
    p = _map_index(s, L, H, W, DIR, COLS_T)
    low_base = low_ptr + pid_b * s_low_b + DIR * s_low_k
    row = DIR * d + chan
    dt, _ = _step(low_base, w_ptr + DIR * d * R, bias_ptr + DIR * d,
                  s_low_r, p, t_mask, chan, d_mask, R, BD, T, HAS_BIAS,
                  SOFTPLUS)
    bc_base = bc_ptr + pid_b * s_bc_b + DIR * s_bc_k
    if ADJOINT:
        nxt = s + 1
        n_mask = (nxt < L) & (j > 0)  # the chunk's last step takes the carry
        pn = _map_index(nxt, L, H, W, DIR, COLS_T)
        dt_next, _ = _step(low_base, w_ptr + DIR * d * R, bias_ptr + DIR * d,
                           s_low_r, pn, n_mask, chan, d_mask, R, BD, T,
                           HAS_BIAS, SOFTPLUS)
        gy = tl.load(gy_ptr + map_offsets(pid_b, d, chan, L, p),
                     mask=mask, other=0.0).to(tl.float32)
    else:
        u = tl.load(x_ptr + map_offsets(pid_b, d, chan, L, p),
                    mask=mask, other=0.0).to(tl.float32)
    last = j[None, :] == T - 1
    first_step = (s == pid_c * T)[None, :]
    for n in tl.static_range(N):
        a = tl.load(a_ptr + row * N + n, mask=d_mask, other=0.0)
        decay = tl.where(mask, tl.exp(dt * a[:, None]), 1.0)
        if ADJOINT:
            c = tl.load(bc_base + (c_off + n) * s_bc_n + p, mask=t_mask,
                        other=0.0).to(tl.float32)
            n_decay = tl.where(d_mask[:, None] & n_mask[None, :],
                               tl.exp(dt_next * a[:, None]), 1.0)
            src = tl.where(mask, gy * c[None, :], 0.0)
            _, g = tl.associative_scan((n_decay, src), 1, _combine)
            # j = T - 1 is the chunk's first step: c_k = a_first g_first.
            summary = tl.sum(tl.where(first_step, decay * g, 0.0), axis=1)
        else:
            bv = tl.load(bc_base + n * s_bc_n + p, mask=t_mask,
                         other=0.0).to(tl.float32)
            drive = tl.where(mask, dt * bv[None, :] * u, 0.0)
            _, hs = tl.associative_scan((decay, drive), 1, _combine)
            summary = tl.sum(tl.where(last, hs, 0.0), axis=1)
        prod = tl.reduce(decay, 1, _mul)
        out = (((pid_b * _DIRS + DIR) * N + n) * chunks + pid_c) * d + chan
        tl.store(p_out + out, prod, mask=d_mask)
        tl.store(s_out + out, summary, mask=d_mask)


@triton.jit
def carry(p_ptr, s_ptr, h_ptr, d, chunks, BD: tl.constexpr,
          REVERSE: tl.constexpr):
    """h_ptr[k] = the state entering chunk k: h <- P h + S over the chunks
    (from the last chunk backwards when ``REVERSE``)."""
    row = tl.program_id(0).to(tl.int64)  # (image, direction, state)
    chan = tl.program_id(1) * BD + tl.arange(0, BD)
    d_mask = chan < d
    h = tl.zeros([BD], dtype=tl.float32)
    for i in range(chunks):
        if REVERSE:
            k = chunks - 1 - i
        else:
            k = i
        at = (row * chunks + k) * d + chan
        tl.store(h_ptr + at, h, mask=d_mask)
        h = tl.load(p_ptr + at, mask=d_mask, other=1.0) * h + \
            tl.load(s_ptr + at, mask=d_mask, other=0.0)


@triton.jit
def output_chunk(x_ptr, low_ptr, bc_ptr, w_ptr, a_ptr, bias_ptr, d_ptr, h_ptr,
                 y_ptr, hc, pid_b, pid_c, chan, d_mask, d, L, H, W, R, chunks,
                 s_low_b, s_low_k, s_low_r, s_bc_b, s_bc_k, s_bc_n, c_off,
                 DIR: tl.constexpr, N: tl.constexpr, NP: tl.constexpr,
                 BD: tl.constexpr, T: tl.constexpr, HAS_BIAS: tl.constexpr,
                 HAS_D: tl.constexpr, HAS_ENTRY: tl.constexpr,
                 SOFTPLUS: tl.constexpr, COLS_T: tl.constexpr,
                 SEQ: tl.constexpr):
    """y[b, :, p] += sum_n C h + D u for one direction's chunk ``pid_c``.
    Its entering states are ``hc`` (``SEQ``: the previous chunk's end
    states, (BD, NP) in registers, also stored for the backward where it
    needs them) or read from ``h_ptr``; returns its end states."""
    j = tl.arange(0, T)
    s = pid_c * T + j
    t_mask = s < L
    mask = d_mask[:, None] & t_mask[None, :]
    p = _map_index(s, L, H, W, DIR, COLS_T)
    row = DIR * d + chan
    dt, _ = _step(low_ptr + pid_b * s_low_b + DIR * s_low_k,
                  w_ptr + DIR * d * R, bias_ptr + DIR * d, s_low_r, p, t_mask,
                  chan, d_mask, R, BD, T, HAS_BIAS, SOFTPLUS)
    map_ptrs = map_offsets(pid_b, d, chan, L, p)
    u = tl.load(x_ptr + map_ptrs, mask=mask, other=0.0).to(tl.float32)
    bc_base = bc_ptr + pid_b * s_bc_b + DIR * s_bc_k
    state = tl.arange(0, NP)[None, :]
    last = (j == T - 1)[None, :]  # padding steps keep the state
    ends = tl.zeros([BD, NP], dtype=tl.float32)
    y = tl.zeros([BD, T], dtype=tl.float32)
    for n in tl.static_range(N):
        a = tl.load(a_ptr + row * N + n, mask=d_mask, other=0.0)
        bv = tl.load(bc_base + n * s_bc_n + p, mask=t_mask,
                     other=0.0).to(tl.float32)
        c = tl.load(bc_base + (c_off + n) * s_bc_n + p, mask=t_mask,
                    other=0.0).to(tl.float32)
        decay = tl.where(mask, tl.exp(dt * a[:, None]), 1.0)
        drive = tl.where(mask, dt * bv[None, :] * u, 0.0)
        acc_a, hs = tl.associative_scan((decay, drive), 1, _combine)
        at = (((pid_b * _DIRS + DIR) * N + n) * chunks + pid_c) * d + chan
        if SEQ:
            h_in = tl.sum(tl.where(state == n, hc, 0.0), axis=1)
            if HAS_ENTRY:
                tl.store(h_ptr + at, h_in, mask=d_mask)
            hs += acc_a * h_in[:, None]
            end = tl.sum(tl.where(last, hs, 0.0), axis=1)
            ends = tl.where(state == n, end[:, None], ends)
        elif HAS_ENTRY:
            h_in = tl.load(h_ptr + at, mask=d_mask, other=0.0)
            hs += acc_a * h_in[:, None]
        y += c[None, :] * hs
    if HAS_D:
        y += tl.load(d_ptr + row, mask=d_mask, other=0.0)[:, None] * u
    tl.atomic_add(y_ptr + map_ptrs, y, mask=mask)
    return ends


@triton.jit
def output(x_ptr, low_ptr, bc_ptr, w_ptr, a_ptr, bias_ptr, d_ptr, h_ptr, y_ptr,
           d, L, H, W, R, chunks, s_low_b, s_low_k, s_low_r, s_bc_b, s_bc_k,
           s_bc_n, c_off, DIR: tl.constexpr, N: tl.constexpr, BD: tl.constexpr,
           T: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_D: tl.constexpr,
           HAS_ENTRY: tl.constexpr, SOFTPLUS: tl.constexpr,
           COLS_T: tl.constexpr, SEQ: tl.constexpr, NP: tl.constexpr):
    """One direction's output: a program per chunk whose entering states
    ``_carries`` computed or, with ``SEQ``, a program per (image, channel
    block) walking every chunk in order with the state in registers."""
    pid_b = image_index()
    chan = tl.program_id(1) * BD + tl.arange(0, BD)
    d_mask = chan < d
    hc = tl.zeros([BD, NP], dtype=tl.float32)
    if SEQ:
        for k in range(chunks):
            hc = output_chunk(
                x_ptr, low_ptr, bc_ptr, w_ptr, a_ptr, bias_ptr, d_ptr, h_ptr,
                y_ptr, hc, pid_b, k, chan, d_mask, d, L, H, W, R, chunks,
                s_low_b, s_low_k, s_low_r, s_bc_b, s_bc_k, s_bc_n, c_off,
                DIR, N, NP, BD, T, HAS_BIAS, HAS_D, HAS_ENTRY, SOFTPLUS,
                COLS_T, SEQ)
    else:
        output_chunk(
            x_ptr, low_ptr, bc_ptr, w_ptr, a_ptr, bias_ptr, d_ptr, h_ptr,
            y_ptr, hc, pid_b, tl.program_id(2), chan, d_mask, d, L, H, W, R,
            chunks, s_low_b, s_low_k, s_low_r, s_bc_b, s_bc_k, s_bc_n, c_off,
            DIR, N, NP, BD, T, HAS_BIAS, HAS_D, HAS_ENTRY, SOFTPLUS, COLS_T,
            SEQ)


@triton.jit
def grads(x_ptr, low_ptr, bc_ptr, w_ptr, a_ptr, bias_ptr, d_ptr, h_ptr, g_ptr,
          gy_ptr, gx_ptr, graw_ptr, ga_ptr, gbc_ptr, gd_ptr, gbias_ptr, d, L,
          H, W, R, chunks, s_low_b, s_low_k, s_low_r, s_bc_b, s_bc_k, s_bc_n,
          c_off, DIR: tl.constexpr, N: tl.constexpr, BD: tl.constexpr,
          T: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_D: tl.constexpr,
          HAS_ENTRY: tl.constexpr, SOFTPLUS: tl.constexpr,
          COLS_T: tl.constexpr):
    """Every gradient of one direction's chunk: states recomputed from the
    entering state, the adjoint g from the carry that enters from the right
    (``g_ptr``), then dL/du (added into gx), dL/d(raw step) (stored, one
    writer per element), and dA, dB, dC, dD, d(bias) summed and added."""
    pid_b = image_index()
    pid_d = tl.program_id(1)
    pid_c = tl.program_id(2)
    chan = pid_d * BD + tl.arange(0, BD)
    d_mask = chan < d
    j = tl.arange(0, T)
    s = pid_c * T + j
    t_mask = s < L
    mask = d_mask[:, None] & t_mask[None, :]
    p = _map_index(s, L, H, W, DIR, COLS_T)
    nxt = s + 1
    n_mask = (nxt < L) & (j < T - 1)
    pn = _map_index(nxt, L, H, W, DIR, COLS_T)
    row = DIR * d + chan
    low_base = low_ptr + pid_b * s_low_b + DIR * s_low_k
    w_base = w_ptr + DIR * d * R
    dt, raw = _step(low_base, w_base, bias_ptr + DIR * d, s_low_r, p, t_mask,
                    chan, d_mask, R, BD, T, HAS_BIAS, SOFTPLUS)
    dt_next, _ = _step(low_base, w_base, bias_ptr + DIR * d, s_low_r, pn,
                       n_mask, chan, d_mask, R, BD, T, HAS_BIAS, SOFTPLUS)
    map_ptrs = map_offsets(pid_b, d, chan, L, p)
    u = tl.load(x_ptr + map_ptrs, mask=mask, other=0.0).to(tl.float32)
    gy = tl.load(gy_ptr + map_ptrs, mask=mask, other=0.0).to(tl.float32)
    bc_base = bc_ptr + pid_b * s_bc_b + DIR * s_bc_k
    gbc_base = gbc_ptr + pid_b * s_bc_b + DIR * s_bc_k
    last = j[None, :] == T - 1
    gu = tl.zeros([BD, T], dtype=tl.float32)
    gdt = tl.zeros([BD, T], dtype=tl.float32)
    for n in tl.static_range(N):
        a = tl.load(a_ptr + row * N + n, mask=d_mask, other=0.0)
        bv = tl.load(bc_base + n * s_bc_n + p, mask=t_mask,
                     other=0.0).to(tl.float32)
        c = tl.load(bc_base + (c_off + n) * s_bc_n + p, mask=t_mask,
                    other=0.0).to(tl.float32)
        decay = tl.where(mask, tl.exp(dt * a[:, None]), 1.0)
        bu = bv[None, :] * u
        drive = tl.where(mask, dt * bu, 0.0)
        acc_a, hs = tl.associative_scan((decay, drive), 1, _combine)
        src = tl.where(mask, gy * c[None, :], 0.0)
        if HAS_ENTRY:
            at = (((pid_b * _DIRS + DIR) * N + n) * chunks + pid_c) * d \
                + chan
            h_in = tl.load(h_ptr + at, mask=d_mask, other=0.0)
            hs += acc_a * h_in[:, None]
            carry = tl.load(g_ptr + at, mask=d_mask, other=0.0)
            src += tl.where(last, carry[:, None], 0.0)
        n_decay = tl.where(d_mask[:, None] & n_mask[None, :],
                           tl.exp(dt_next * a[:, None]), 1.0)
        _, g = tl.associative_scan((n_decay, src), 1, _combine, reverse=True)
        g = tl.where(mask, g, 0.0)
        # a_t h_{t-1} = h_t - delta_t B_t u_t: no shifted scan needed.
        kept = hs - drive
        gu += g * dt * bv[None, :]
        gdt += g * (a[:, None] * kept + bu)
        tl.atomic_add(ga_ptr + row * N + n, tl.sum(g * dt * kept, axis=1),
                      mask=d_mask)
        tl.atomic_add(gbc_base + n * s_bc_n + p, tl.sum(g * dt * u, axis=0),
                      mask=t_mask)
        tl.atomic_add(gbc_base + (c_off + n) * s_bc_n + p,
                      tl.sum(tl.where(mask, gy * hs, 0.0), axis=0),
                      mask=t_mask)
    if HAS_D:
        gu += tl.load(d_ptr + row, mask=d_mask, other=0.0)[:, None] * gy
        tl.atomic_add(gd_ptr + row, tl.sum(gy * u, axis=1), mask=d_mask)
    tl.atomic_add(gx_ptr + map_ptrs, gu, mask=mask)
    if SOFTPLUS:
        gdt = gdt / (1.0 + tl.exp(-raw))  # softplus' = sigmoid
    gdt = tl.where(mask, gdt, 0.0)
    if HAS_BIAS:
        tl.atomic_add(gbias_ptr + row, tl.sum(gdt, axis=1), mask=d_mask)
    tl.store(graw_ptr + raw_step_offsets(pid_b, DIR, d, chan, L, p), gdt,
             mask=mask)
