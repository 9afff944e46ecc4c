"""The Triton cross-scan kernels (SS2D's GPU path) against the float64
per-token reference, in outputs and every gradient.

On a CUDA machine they run on the GPU (the proof: the interpreter has hidden
GPU-only bugs before); elsewhere one test reruns this file under
``TRITON_INTERPRET=1``, which must be set before triton is imported.
"""
import os

import pytest
import torch

from mmsparx.ops import cross_merge, cross_scan, directional
from mmsparx.ops.selective_scan import selective_scan_reference

INTERPRETED = os.environ.get('TRITON_INTERPRET') == '1'
DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'
needs_kernels = pytest.mark.skipif(
    DEVICE == 'cpu' and not INTERPRETED,
    reason='no CUDA: test_runs_under_the_interpreter reruns these')

# (b, d, H, W, N, R). L = H * W against 64-token chunks: one chunk, two with
# a partial last one and d in two channel blocks, three with N = 2, a
# single row, a single column.
SHAPES = [(2, 5, 3, 4, 1, 3), (1, 18, 9, 13, 1, 2), (2, 7, 20, 7, 2, 3),
          (1, 4, 1, 70, 1, 1), (1, 3, 70, 1, 4, 2)]
if DEVICE == 'cuda':  # 49 chunks as at SparX-T's stage 1 at 224
    SHAPES += [(1, 24, 56, 56, 1, 4)]
# Images in the variants' tests below: the batch index is tested above
# (two images of three chunks); interpreted, one image halves their time.
BATCH = 1 if INTERPRETED else 2


def make_inputs(b, d, h, w, n, r, seed=0, softplus=True):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, std=1.0):
        return torch.randn(*shape, generator=g, dtype=torch.float64) * std

    inputs = dict(
        x=rand(b, d, h, w), dt_low=rand(b, 4, r, h * w),
        dt_weight=rand(4, d, r, std=0.5),
        A=-torch.exp(rand(4 * d, n, std=0.5)),
        B=rand(b, 4, n, h * w), C=rand(b, 4, n, h * w), D=rand(4 * d),
        delta_bias=rand(4 * d, std=0.5) - (0 if softplus else 2))
    return inputs


def reference(x, dt_low, dt_weight, A, B, C, D=None, delta_bias=None,
              delta_softplus=True):
    """Four explicit sequences through the per-token loop, merged."""
    b, d, h, w = x.shape
    delta = torch.einsum('kdr,bkrl->bkdl', dt_weight, dt_low)
    y = selective_scan_reference(
        cross_scan(x).reshape(b, 4 * d, h * w),
        directional(delta, h, w).reshape(b, 4 * d, h * w), A,
        directional(B, h, w), directional(C, h, w), D, delta_bias,
        delta_softplus=delta_softplus)
    return cross_merge(y.view(b, 4, d, h * w), h, w)


def kernel(**inputs):
    from mmsparx.ops.triton_cross_scan import triton_cross_selective_scan
    return triton_cross_selective_scan(**inputs)


def compare(inputs, softplus=True, dtype=torch.float32, rtol=1e-4,
            grad_rtol=1e-3, **kwargs):
    """Kernel (inputs cast to ``dtype``) against the float64 reference on
    the same (rounded) values: output and the gradient of every input."""
    leaves = {k: v.to(DEVICE).requires_grad_(True) for k, v in inputs.items()}
    cast = {k: v.to(dtype) if k in ('x', 'dt_low', 'B', 'C') else v.float()
            for k, v in leaves.items()}
    out = kernel(**cast, delta_softplus=softplus, **kwargs)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    exact = {k: v.to(dtype).double() if k in ('x', 'dt_low', 'B', 'C')
             else v.float().double() for k, v in leaves.items()}
    ref = reference(**exact, delta_softplus=softplus)
    scale = ref.abs().max().item()
    torch.testing.assert_close(out.double(), ref, rtol=rtol,
                               atol=rtol * scale)
    grad_out = torch.randn(out.shape, generator=torch.Generator()
                           .manual_seed(1)).to(DEVICE)
    grads = torch.autograd.grad(out, list(leaves.values()), grad_out)
    ref_grads = torch.autograd.grad(ref, list(leaves.values()),
                                    grad_out.double())
    for name, grad, ref_grad in zip(leaves, grads, ref_grads):
        assert torch.isfinite(grad).all(), name
        torch.testing.assert_close(
            grad.double(), ref_grad, rtol=grad_rtol,
            atol=grad_rtol * ref_grad.abs().max().item(),
            msg=lambda m: f'grad of {name}: {m}')


@needs_kernels
@pytest.mark.parametrize('shape', SHAPES)
def test_matches_float64_reference(shape):
    compare(make_inputs(*shape))


@needs_kernels
def test_columns_read_in_place_match_too(monkeypatch):
    # The columns' other layout: the row-major map read with a stride.
    from mmsparx.ops import triton_cross_scan
    monkeypatch.setattr(triton_cross_scan, 'TRANSPOSE_COLUMNS', False)
    compare(make_inputs(BATCH, 7, 20, 7, 2, 3))


@needs_kernels
@pytest.mark.parametrize('shape', [(2, 7, 20, 7, 2, 3), (1, 18, 9, 13, 1, 2),
                                   (1, 3, 70, 1, 3, 2)])
def test_whole_sequence_programs_match(shape, monkeypatch):
    # A program per (image, channel block) walking every chunk with its
    # state in registers (3 states: padded to 4 there; the other tests run
    # a program per chunk); the backward reads the entering states it
    # wrote.
    from mmsparx.ops import triton_cross_scan
    monkeypatch.setattr(triton_cross_scan, 'SEQUENTIAL', True)
    compare(make_inputs(*shape))


@needs_kernels
def test_without_softplus_bias_or_skip():
    inputs = make_inputs(BATCH, 7, 20, 7, 2, 3, softplus=False)
    del inputs['D'], inputs['delta_bias']
    inputs['dt_low'] = inputs['dt_low'].abs() * 0.3  # steps > 0 here too
    compare(inputs, softplus=False)


@needs_kernels
def test_steep_decays_stay_finite():
    # |delta A| up to ~100 per step: products of decays underflow to 0.
    inputs = make_inputs(1, 6, 11, 12, 1, 2)
    inputs['dt_low'] *= 40
    compare(inputs)


@needs_kernels
@pytest.mark.parametrize('dtype,tol', [(torch.bfloat16, 1e-3),
                                       (torch.float16, 1e-3)])
def test_half_inputs_keep_a_float32_state(dtype, tol):
    # Only the inputs are rounded; the kernel computes in float32.
    compare(make_inputs(2, 7, 20, 7, 1, 3), dtype=dtype, rtol=tol,
            grad_rtol=5 * tol)


@needs_kernels
def test_strided_views_of_one_projection():
    # SS2D splits one (b, 4, R + 2N, L) projection: dt_low, B and C are
    # views with the projection's strides.
    b, d, h, w, n, r = 2, 9, 10, 9, 1, 3
    inputs = {k: v.float().to(DEVICE)
              for k, v in make_inputs(b, d, h, w, n, r).items()}
    proj = torch.cat([inputs['dt_low'], inputs['B'], inputs['C']], dim=2)
    low, B, C = torch.split(proj, [r, n, n], dim=2)
    assert not low.is_contiguous()
    views = dict(inputs, dt_low=low, B=B, C=C)
    torch.testing.assert_close(kernel(**views, delta_softplus=True),
                               kernel(**inputs, delta_softplus=True),
                               rtol=0, atol=0)


@needs_kernels
def test_torch_compile_keeps_the_op_whole():
    # Registered with torch.library: a full graph, eager's numbers.
    inputs = {k: v.float().to(DEVICE).requires_grad_(True)
              for k, v in make_inputs(1, 6, 9, 10, 1, 2).items()}

    def fn(**kw):
        return kernel(**kw, delta_softplus=True).square().sum()

    backend = 'inductor' if DEVICE == 'cuda' else 'aot_eager'
    compiled = torch.compile(fn, fullgraph=True, backend=backend)
    eager = torch.autograd.grad(fn(**inputs), list(inputs.values()))
    again = torch.autograd.grad(compiled(**inputs), list(inputs.values()))
    for name, a, b in zip(inputs, eager, again):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=name)
