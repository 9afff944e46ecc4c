"""GPU scan kernels check themselves: a wrong kernel, injected here in
place of the Triton ones, is caught on first use (forward or gradient),
warned about in one paragraph, and replaced by a correct path."""
import importlib
import os
import warnings

import pytest
import torch

from mmsparx.ops import kernel_check
from mmsparx.ops.kernel_check import KernelMismatchWarning

DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'
scan = importlib.import_module('mmsparx.ops.selective_scan')
cross = importlib.import_module('mmsparx.ops.cross_selective_scan')


@pytest.fixture(autouse=True)
def fresh_verdicts(monkeypatch):
    """Every test starts with no verdict, and the Triton backend listed on
    the CPU (as under the interpreter) with whatever kernel it injects."""
    kernel_check.reset()
    if not torch.cuda.is_available():
        monkeypatch.setenv('TRITON_INTERPRET', '1')
    monkeypatch.delenv(kernel_check.CHECK_ENV, raising=False)
    yield
    kernel_check.reset()


def use_triton_kernel(monkeypatch, fn) -> None:
    monkeypatch.setattr(scan, '_triton_fn', lambda: fn)


class WrongDeltaGradient(torch.autograd.Function):
    """The right forward, a wrong delta gradient (as the generic Triton
    scan once computed on an H200 while passing under the interpreter)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, bias, softplus):
        with torch.enable_grad():
            args = [t.detach().requires_grad_() for t in (u, delta, A, B, C,
                                                          D, bias)]
            y = scan.selective_scan_chunked(*args, softplus)
        ctx.save_for_backward(y, *args)
        return y.detach()

    @staticmethod
    def backward(ctx, grad):
        y, *args = ctx.saved_tensors
        grads = list(torch.autograd.grad(y, args, grad))
        grads[1] = grads[1] * 1.05
        return (*grads, None)


def inputs(dtype=torch.float32):
    u, delta, A, B, C, D, bias = kernel_check.scan_inputs(2)
    return [t.to(DEVICE, dtype if i in kernel_check.SCAN_ACTIVATIONS else
                 torch.float32) for i, t in enumerate((u, delta, A, B, C, D,
                                                       bias))]


def test_wrong_gradient_is_caught_and_replaced(monkeypatch):
    use_triton_kernel(monkeypatch, WrongDeltaGradient.apply)
    args = inputs()
    with pytest.warns(KernelMismatchWarning) as caught:
        y = scan.selective_scan(*args, delta_softplus=True, backend='triton')
    (warning, ) = caught
    text = str(warning.message)
    assert 'the triton selective-scan kernel disagrees' in text
    assert f'on {DEVICE}' in text
    assert '(torch.float32, d_state 2, softplus True)' in text
    assert 'd(delta) is off by' in text
    fallback = [b for b in scan.available_backends(DEVICE)
                if b != 'triton'][0]
    assert f'uses the {fallback} backend instead' in text
    assert torch.allclose(y, scan.selective_scan(
        *args, delta_softplus=True, backend=fallback))
    # Once per process and key: no second check, no second warning.
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        scan.selective_scan(*args, delta_softplus=True, backend='triton')
    # Another d_state is another key, checked again.
    other = kernel_check.scan_inputs(1)
    with pytest.warns(KernelMismatchWarning, match='d_state 1'):
        scan.selective_scan(*[t.to(DEVICE, torch.float32) for t in other],
                            backend='triton')


def test_a_correct_kernel_is_used_without_a_word(monkeypatch):
    calls = []

    def counted(*args):
        calls.append(1)
        return scan.selective_scan_chunked(*args)
    use_triton_kernel(monkeypatch, counted)
    for dtype in (torch.float32, torch.bfloat16):
        with warnings.catch_warnings():
            warnings.simplefilter('error', KernelMismatchWarning)
            scan.selective_scan(*inputs(dtype), backend='triton')
    assert len(calls) == 4  # per dtype: the check, then the call itself
    assert set(kernel_check.timings) == {
        ('triton', str(torch.device(DEVICE)), dtype, 2, False)
        for dtype in (torch.float32, torch.bfloat16)}


def test_a_kernel_that_fails_to_run_is_replaced(monkeypatch):
    def broken(*args):
        raise RuntimeError('no kernel image is available for execution')
    use_triton_kernel(monkeypatch, broken)
    with pytest.warns(KernelMismatchWarning, match='RuntimeError: no kernel'):
        y = scan.selective_scan(*inputs(), backend='triton')
    assert torch.isfinite(y).all()


def test_the_check_can_be_switched_off(monkeypatch):
    monkeypatch.setenv(kernel_check.CHECK_ENV, '0')
    use_triton_kernel(monkeypatch, lambda *args: torch.zeros_like(args[0]))
    with warnings.catch_warnings():
        warnings.simplefilter('error', KernelMismatchWarning)
        y = scan.selective_scan(*inputs(), backend='triton')
    assert not y.any()  # the (wrong) kernel ran unchecked


def test_wrong_fused_cross_scan_falls_back_to_the_generic_path(monkeypatch):
    fused = pytest.importorskip('mmsparx.ops.triton_cross_scan')
    use_triton_kernel(monkeypatch, scan.selective_scan_chunked)  # correct
    seen = []

    def wrong(*args):
        seen.append(fused.SEQUENTIAL)
        if fused.SEQUENTIAL:  # only the one-pass forward is wrong
            return cross.cross_selective_scan_generic(
                *args, backend='chunked').float() * 1.01
        return cross.cross_selective_scan_generic(
            *args, backend='chunked').float()
    monkeypatch.setattr(fused, 'triton_cross_selective_scan', wrong)
    args = [t.to(DEVICE, torch.float32) for t in kernel_check.cross_inputs(1)]
    with pytest.warns(KernelMismatchWarning) as caught:
        y = cross.cross_selective_scan(
            *args, delta_softplus=True, backend='triton')
    (warning, ) = caught
    text = str(warning.message)
    assert 'the fused Triton cross-scan kernel disagrees' in text
    assert '(one-pass forward)' in text and 'uses the generic path' in text
    assert seen == [False, True]  # both forwards checked, in that order
    want = cross.cross_selective_scan_generic(
        *[t.double() for t in args], delta_softplus=True,
        backend='reference')
    assert torch.allclose(y.double().cpu(), want, atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available() and os.environ.get(
    'TRITON_INTERPRET') != '1', reason='no CUDA: test_triton_interpreter.py '
    'runs this under the interpreter')
def test_the_real_kernels_pass_their_checks():
    """The Triton kernels themselves (on the GPU, or interpreted) pass:
    no warning, every verdict None, both dtypes the models use."""
    # bfloat16 on the GPU; interpreted, float32 alone (minutes otherwise).
    dtypes = (torch.float32, ) + ((torch.bfloat16, ) if DEVICE == 'cuda'
                                  else ())
    with warnings.catch_warnings():
        warnings.simplefilter('error', KernelMismatchWarning)
        for dtype in dtypes:
            scan.selective_scan(*inputs(dtype), delta_softplus=True,
                                backend='triton')
            cross.cross_selective_scan(
                *[t.to(DEVICE, dtype if i in kernel_check.CROSS_ACTIVATIONS
                       else torch.float32)
                  for i, t in enumerate(kernel_check.cross_inputs(1))],
                delta_softplus=True, backend='triton')
    assert len(kernel_check.timings) == 2 * len(dtypes)
