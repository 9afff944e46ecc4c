"""Every scan backend on this machine against the per-token reference, in
outputs and in the gradients of all inputs."""
import pytest
import torch

from mmsparx.ops import available_backends, cross_merge, cross_scan
from mmsparx.ops.selective_scan import (_choose_chunk, resolve_backend,
                                        selective_scan,
                                        selective_scan_reference)

DEVICES = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])
FAST = [(dev, name) for dev in DEVICES for name in available_backends(dev)
        if name != 'reference']


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
    inputs = make_inputs(2, 8, 67, 16, 4, device=device)
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


def test_large_decays_do_not_overflow():
    # |delta * A| up to ~50 per step: a 64-token chunk would need exp(3000).
    inputs = make_inputs(1, 4, 100, 2, 1, 'cpu', scale=30.0)
    assert _choose_chunk(torch.full((1, ), -50.0), 64, 100) == 1
    # Otherwise the length splits evenly: 784 tokens in 13 chunks of 61.
    assert _choose_chunk(torch.full((1, ), -0.5), 64, 784) == 61
    assert _choose_chunk(torch.full((1, ), -0.5), 64, 49) == 49
    ref, ref_grads = run(selective_scan_reference, inputs)
    out, grads = run(selective_scan, inputs, backend='chunked')
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    for name in inputs:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-3,
                                   atol=1e-3)


def test_backend_choice_is_visible_and_checked(monkeypatch):
    assert resolve_backend(torch.device('cpu')) == 'chunked'
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
