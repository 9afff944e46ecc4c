"""Every scan backend on this machine against the per-token reference, in
outputs and in the gradients of all inputs."""
import os

import pytest
import torch

from mmsparx.ops import (available_backends, cross_merge, cross_scan,
                         cross_selective_scan, directional)
from mmsparx.ops.selective_scan import (_choose_chunk, resolve_backend,
                                        selective_scan,
                                        selective_scan_reference)

DEVICES = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])
FAST = [(dev, name) for dev in DEVICES for name in available_backends(dev)
        if name != 'reference']


def interpreted(device: str, backend: str) -> bool:
    """Triton kernels run as Python on the CPU (``TRITON_INTERPRET=1``)."""
    return device == 'cpu' and backend == 'triton'


def make_inputs(b, d, length, n, groups, device, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, std=1.0):
        return (torch.randn(*shape, generator=g) * std).to(device)

    inputs = dict(
        u=rand(b, d, length), delta=rand(b, d, length, std=0.5),
        A=-torch.exp(rand(d, n, std=0.5)) * scale,
        B=rand(b, groups, n, length), C=rand(b, groups, n, length),
        D=rand(d), delta_bias=rand(d, std=0.5))
    for value in inputs.values():
        value.requires_grad_(True)
    return inputs


def run(fn, inputs, **kwargs):
    out = fn(**inputs, delta_softplus=True, **kwargs)
    grad_out = torch.randn(out.shape, generator=torch.Generator()
                           .manual_seed(1)).to(out.device, out.dtype)
    grads = torch.autograd.grad(out, list(inputs.values()), grad_out)
    return out, dict(zip(inputs, grads))


# Lengths 1, 7, 67 and 130 are not multiples of any chunk size.
SHAPES = [(2, 8, 1, 1, 4), (1, 8, 7, 16, 2), (2, 12, 67, 1, 4),
          (1, 4, 130, 16, 1), (2, 8, 64, 4, 4)]


@pytest.mark.parametrize('device,backend', FAST)
@pytest.mark.parametrize('shape', SHAPES)
def test_matches_reference_float32(device, backend, shape):
    inputs = make_inputs(*shape, device=device)
    ref, ref_grads = run(selective_scan_reference, inputs)
    out, grads = run(selective_scan, inputs, backend=backend)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    for name in inputs:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-3,
                                   atol=1e-3, msg=f'grad of {name}')


@pytest.mark.parametrize('device,backend', FAST)
@pytest.mark.parametrize('dtype,tol', [(torch.bfloat16, 3e-2),
                                       (torch.float16, 5e-3)])
def test_autocast_keeps_the_state_float32(device, backend, dtype, tol):
    # Past one 64-token chunk; interpreted (Triton on the CPU) one image
    # of fewer channels and states: the same path at a fifth of the time.
    size = (1, 4, 67, 4, 2) if interpreted(device, backend) else \
        (2, 8, 67, 16, 4)
    inputs = make_inputs(*size, device=device)
    ref, ref_grads = run(selective_scan_reference, inputs)
    with torch.autocast(device, dtype=dtype):
        half = {k: v.to(dtype) if k in ('u', 'delta', 'B', 'C') else v
                for k, v in inputs.items()}
        out = selective_scan(**half, delta_softplus=True, backend=backend)
    assert out.dtype == dtype and torch.isfinite(out).all()
    # The only error is the half-precision rounding of the inputs/output.
    exact = selective_scan_reference(
        **{k: v.float() for k, v in half.items()}, delta_softplus=True)
    torch.testing.assert_close(out.float(), exact, rtol=tol, atol=tol)
    out.float().sum().backward()
    assert all(torch.isfinite(v.grad).all() for v in inputs.values())


@pytest.mark.parametrize('backend', [b for d, b in FAST if d == 'cpu'])
def test_large_decays_do_not_overflow(backend):
    # |delta * A| up to ~50 per step: a 64-token chunk would need exp(3000).
    inputs = make_inputs(1, 4, 100, 2, 1, 'cpu', scale=30.0)
    assert _choose_chunk(torch.full((1, ), -50.0), 64, 100) == 1
    # Otherwise the length splits evenly: 784 tokens in 13 chunks of 61.
    assert _choose_chunk(torch.full((1, ), -0.5), 64, 784) == 61
    assert _choose_chunk(torch.full((1, ), -0.5), 64, 49) == 49
    ref, ref_grads = run(selective_scan_reference, inputs)
    out, grads = run(selective_scan, inputs, backend=backend)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    for name in inputs:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-3,
                                   atol=1e-3)


@pytest.mark.parametrize('device,backend', FAST)
def test_without_skip_bias_or_softplus(device, backend):
    inputs = make_inputs(2, 8, 33, 2, 2, device=device)
    del inputs['D'], inputs['delta_bias']
    ref = selective_scan_reference(**inputs)
    ref_grads = torch.autograd.grad(ref.sum(), list(inputs.values()))
    out = selective_scan(**inputs, backend=backend)
    grads = torch.autograd.grad(out.sum(), list(inputs.values()))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    for grad, ref_grad in zip(grads, ref_grads):
        torch.testing.assert_close(grad, ref_grad, rtol=1e-3, atol=1e-3)


@pytest.mark.skipif(os.environ.get('MMSPARX_NO_EXT') == '1',
                    reason='installed without extensions on purpose')
def test_fused_cpu_kernel_was_built():
    # `make setup` compiles it; without it CPU training runs ~3x slower.
    assert 'fused_cpu' in available_backends('cpu'), (
        'the fused CPU scan was not built: rerun `make setup` and read the '
        'compiler output of the mmsparx step')


def test_backend_choice_is_visible_and_checked(monkeypatch):
    assert resolve_backend(torch.device('cpu')) == \
        available_backends('cpu')[0]
    monkeypatch.setenv('MMSPARX_SCAN_BACKEND', 'reference')
    assert resolve_backend(torch.device('cpu')) == 'reference'
    with pytest.raises(ValueError, match='unknown scan backend'):
        resolve_backend(torch.device('cpu'), 'fast')
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match='mamba_ssm needs CUDA'):
            resolve_backend(torch.device('cpu'), 'mamba_ssm')


def test_cross_scan_directions_and_merge_is_its_adjoint():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float64).view(2, 3, 4, 5)
    seq = cross_scan(x)
    assert seq.shape == (2, 4, 3, 20)
    torch.testing.assert_close(seq[:, 0], x.flatten(2))
    torch.testing.assert_close(seq[:, 1], x.transpose(2, 3).flatten(2))
    torch.testing.assert_close(seq[:, 2], x.flatten(2).flip(-1))
    torch.testing.assert_close(seq[:, 3], x.transpose(2, 3).flatten(2)
                               .flip(-1))
    # <cross_scan(x), y> == <x, cross_merge(y)>: merge is the exact adjoint.
    y = torch.randn(2, 4, 3, 20, generator=torch.Generator().manual_seed(0),
                    dtype=torch.float64)
    torch.testing.assert_close((cross_scan(x) * y).sum(),
                               (x * cross_merge(y, 4, 5)).sum())
    x.requires_grad_(True)
    cross_scan(x).backward(y)
    torch.testing.assert_close(x.grad, cross_merge(y, 4, 5))


def make_cross_inputs(b, d, h, w, n, r=3, seed=0):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, std=1.0):
        return (torch.randn(*shape, generator=g) * std).requires_grad_(True)

    length = h * w
    A = (-torch.exp(torch.randn(4 * d, n, generator=g) * 0.5))
    return dict(x=rand(b, d, h, w), dt_low=rand(b, 4, r, length),
                dt_weight=rand(4, d, r, std=0.3), A=A.requires_grad_(True),
                B=rand(b, 4, n, length), C=rand(b, 4, n, length),
                D=rand(4 * d), delta_bias=rand(4 * d, std=0.5))


@pytest.mark.parametrize('backend', [b for d, b in FAST if d == 'cpu'])
@pytest.mark.parametrize('size', [(3, 5, 1, 3), (1, 7, 2, 3), (6, 1, 1, 3),
                                  (4, 4, 3, 3), (3, 4, 1, 37),
                                  (7, 5, 2, 17)])
def test_cross_selective_scan_matches_scan_per_direction(backend, size):
    # The reference: four explicit sequences through the per-token loop.
    # 37 channels: the CPU backward sums B/C gradients in chunks of 16.
    # 7x5: the fused kernel's column walks wrap between columns of a map
    # taller than wide.
    h, w, n, d = size
    _check_cross_scan(backend, make_cross_inputs(2, d, h, w, n), h, w, True)


@pytest.mark.parametrize('backend', [b for d, b in FAST if d == 'cpu'])
@pytest.mark.parametrize('case', ['no_softplus', 'positive_A', 'large_delta'])
def test_cross_selective_scan_exponent_signs(backend, case):
    # The fused kernel's inline exp takes dt * A <= 0 only (softplus and
    # A <= 0, as in SS2D); a negative dt or a positive A takes std::exp,
    # and exponents below -87 are clamped (exp(-87) ~ 1.6e-38 for 0).
    h, w, n, d = 3, 4, 2, 5
    inputs = make_cross_inputs(2, d, h, w, n)
    with torch.no_grad():
        if case == 'positive_A':
            inputs['A'][::3] = 0.1
        elif case == 'large_delta':
            inputs['dt_low'].mul_(40)
    _check_cross_scan(backend, inputs, h, w, case != 'no_softplus')


def _check_cross_scan(backend, inputs, h, w, softplus):
    """``cross_selective_scan`` against four explicit sequences through
    the per-token loop, in outputs and gradients."""
    x, low = inputs['x'], inputs['dt_low']
    b, d = x.shape[:2]
    delta = torch.einsum('kdr,bkrl->bkdl', inputs['dt_weight'], low)
    ref = cross_merge(selective_scan_reference(
        cross_scan(x).reshape(b, 4 * d, h * w),
        directional(delta, h, w).reshape(b, 4 * d, h * w),
        inputs['A'], directional(inputs['B'], h, w),
        directional(inputs['C'], h, w), inputs['D'], inputs['delta_bias'],
        delta_softplus=softplus).view(b, 4, d, h * w), h, w)
    out = cross_selective_scan(**inputs, delta_softplus=softplus,
                               backend=backend)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    grad_out = torch.randn(out.shape, generator=torch.Generator()
                           .manual_seed(1))
    grads = torch.autograd.grad(out, list(inputs.values()), grad_out)
    ref_grads = torch.autograd.grad(ref, list(inputs.values()), grad_out)
    for name, grad, ref_grad in zip(inputs, grads, ref_grads):
        torch.testing.assert_close(grad, ref_grad, rtol=1e-3, atol=1e-3,
                                   msg=f'grad of {name}')


def test_directional_orders_match_cross_scan():
    t = torch.arange(2 * 4 * 3 * 20.).view(2, 4, 3, 20)
    expected = cross_scan(t[:, 0].view(2, 3, 4, 5))
    # Same map in all four slots -> exactly cross_scan's four sequences.
    same = t[:, :1].expand(2, 4, 3, 20)
    torch.testing.assert_close(directional(same, 4, 5), expected)
