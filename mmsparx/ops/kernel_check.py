"""GPU scan kernels check themselves before they are trusted.

A kernel that computes a wrong gradient on one GPU trains silently worse
there: the generic Triton scan once passed every test under Triton's
interpreter and gave wrong delta gradients on an H200. So on first use in
a process, for each (kernel, device, dtype, d_state, softplus) it meets, a
checked kernel runs a small forward and backward that are compared with
the float64 reference on the CPU. On a mismatch (or an error) one warning
paragraph names the kernel, the device, the error and the path used
instead, and the caller takes that correct path for the rest of the
process. ``MMSPARX_KERNEL_CHECK=0`` skips the checks.
"""
from __future__ import annotations

import os
import time
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

CHECK_ENV = 'MMSPARX_KERNEL_CHECK'
# Largest error allowed, relative to the reference's largest magnitude,
# per input dtype: float32 accumulates in a different order; half inputs
# are rounded before the kernel reads them.
TOLERANCE = {torch.float32: 2e-3, torch.float16: 2e-2, torch.bfloat16: 6e-2}
GRAD_NAMES = ('y', 'du', 'd(delta)', 'dA', 'dB', 'dC', 'dD', 'd(bias)')

# key -> None (passed) or what was wrong; seconds each check took.
_verdicts: Dict[Tuple, Optional[str]] = {}
timings: Dict[Tuple, float] = {}


class KernelMismatchWarning(RuntimeWarning):
    """A GPU kernel disagreed with the reference and is not used."""


def enabled() -> bool:
    return os.environ.get(CHECK_ENV, '1') != '0'


def can_check(t: Tensor) -> bool:
    """Checks run eagerly: not while Dynamo traces, a CUDA graph is
    captured or fake tensors stand in (the verdict of an earlier eager
    call still holds there)."""
    if not enabled() or torch.compiler.is_compiling() or \
            isinstance(t, torch._subclasses.FakeTensor):
        return False
    return not (t.is_cuda and torch.cuda.is_current_stream_capturing())


def compare(got: Sequence[Optional[Tensor]],
            want: Sequence[Optional[Tensor]], dtype: torch.dtype,
            names: Sequence[str] = GRAD_NAMES) -> Optional[str]:
    """None when every tensor of ``got`` is within the dtype's tolerance
    of ``want`` (float64), else which one is off and by how much."""
    tol = TOLERANCE.get(dtype, TOLERANCE[torch.float32])
    for name, g, w in zip(names, got, want):
        if w is None:
            continue
        if g is None:
            return f'{name} is missing'
        g = g.detach().double().cpu()
        if g.shape != w.shape:
            return f'{name} has shape {tuple(g.shape)}, not {tuple(w.shape)}'
        if not torch.isfinite(g).all():
            return f'{name} is not finite'
        scale = float(w.abs().max()) or 1.0
        err = float((g - w).abs().max())
        if err > tol * scale:
            return (f'{name} is off by {err:.3g} (largest reference value '
                    f'{scale:.3g}, tolerance {tol:g} of it)')
    return None


def forward_backward(fn: Callable[..., Tensor], inputs: List[Optional[Tensor]],
                     dtype: torch.dtype, device, activations: Sequence[int],
                     *extra) -> List[Optional[Tensor]]:
    """[y, the gradient of every input] of ``fn(*inputs, *extra)`` run on
    ``device``, the inputs at ``activations`` in ``dtype`` (as the models
    pass them), the rest in float32 (float64 for a float64 run), with a
    fixed output gradient."""
    other = torch.float64 if dtype == torch.float64 else torch.float32
    leaves = []
    for i, t in enumerate(inputs):
        if t is not None:
            t = t.to(device=device, dtype=dtype if i in activations else
                     other).detach().requires_grad_(True)
        leaves.append(t)
    y = fn(*leaves, *extra)
    gen = torch.Generator().manual_seed(1)
    gy = torch.randn(y.shape, generator=gen, dtype=torch.float64)
    present = [t for t in leaves if t is not None]
    grads = iter(torch.autograd.grad(y, present, gy.to(y), allow_unused=True))
    return [y.detach()] + [None if t is None else next(grads)
                           for t in leaves]


def check(fn: Callable[..., Tensor], reference: Callable[..., Tensor],
          inputs: List[Optional[Tensor]], activations: Sequence[int],
          device, dtype: torch.dtype, *extra) -> Optional[str]:
    """``fn`` on ``device`` in ``dtype`` against ``reference`` in float64
    on the CPU, both given the same values (the activations rounded to
    ``dtype`` first): None, or what is off."""
    rounded = [t if t is None or i not in activations else t.to(dtype)
               for i, t in enumerate(inputs)]
    # The model may be in no_grad / inference mode or under autocast.
    with torch.inference_mode(False), torch.enable_grad(), \
            torch.autocast('cpu', enabled=False), \
            torch.autocast('cuda', enabled=False):
        want = forward_backward(reference, rounded, torch.float64, 'cpu',
                                activations, *extra)
        got = forward_backward(fn, inputs, dtype, device, activations,
                               *extra)
    return compare(got, want, dtype)


def passes(kernel: str, key: Tuple, run: Callable[[], Optional[str]],
           instead: str) -> bool:
    """Whether ``kernel`` may compute calls of ``key`` (kernel, device,
    dtype, d_state, softplus): ``run`` (a check) once per key and process;
    a failure is warned about once, naming ``instead``."""
    if key in _verdicts:
        return _verdicts[key] is None
    start = time.perf_counter()
    try:
        problem = run()
    except Exception as err:  # a kernel that cannot run here is wrong here
        problem = f'{type(err).__name__}: {err}'
    timings[key] = time.perf_counter() - start
    _verdicts[key] = problem
    if problem is not None:
        warn_mismatch(kernel, key, problem, instead)
    return problem is None


def scan_inputs(d_state: int) -> List[Tensor]:
    """Float64 CPU inputs of the generic scan's check: u, delta (1, 8, 80:
    two chunks of the kernels, the second partial), A, B, C (two groups),
    D, delta_bias."""
    gen = torch.Generator().manual_seed(0)

    def rand(*shape, std=1.0):
        return torch.randn(*shape, generator=gen, dtype=torch.float64) * std
    # Positive steps: without softplus a negative one grows the state.
    return [rand(1, 8, 80), rand(1, 8, 80, std=0.5).abs(),
            -torch.exp(rand(8, d_state, std=0.5)), rand(1, 2, d_state, 80),
            rand(1, 2, d_state, 80), rand(8), rand(8, std=0.5)]


SCAN_ACTIVATIONS = (0, 1, 3, 4)  # u, delta, B, C: in the models' dtype


def cross_inputs(d_state: int) -> List[Tensor]:
    """Float64 CPU inputs of the cross scan's check: x (1, 8, 9, 10: 90
    tokens, two chunks), dt_low (1, 4, 3, 90), dt_weight (4, 8, 3), A
    (32, N), B, C (1, 4, N, 90), D, delta_bias (32,)."""
    gen = torch.Generator().manual_seed(0)

    def rand(*shape, std=1.0):
        return torch.randn(*shape, generator=gen, dtype=torch.float64) * std
    return [rand(1, 8, 9, 10), rand(1, 4, 3, 90).abs(),
            rand(4, 8, 3, std=0.5).abs(),
            -torch.exp(rand(32, d_state, std=0.5)), rand(1, 4, d_state, 90),
            rand(1, 4, d_state, 90), rand(32), rand(32, std=0.5)]


CROSS_ACTIVATIONS = (0, 1, 4, 5)  # x, dt_low, B, C


def device_name(device) -> str:
    device = torch.device(device)
    if device.type == 'cuda':
        return f'{device} ({torch.cuda.get_device_name(device)})'
    return str(device)


def warn_mismatch(kernel: str, key: Tuple, problem: str,
                  instead: str) -> None:
    """The one paragraph a wrong kernel gets (once per key)."""
    _, device, dtype, d_state, softplus = key
    warnings.warn(
        f'mmsparx: the {kernel} kernel disagrees with the float64 reference '
        f'on {device_name(device)} ({dtype}, d_state {d_state}, softplus '
        f'{softplus}): {problem}. This process uses {instead} instead: '
        f'correct, maybe slower. Please report it with the output of '
        f'`python tools/analysis_tools/gpu_check.py`; {CHECK_ENV}=0 skips '
        f'this check.', KernelMismatchWarning, stacklevel=4)


def verified(key: Tuple) -> bool:
    """Whether the check of ``key`` ran and passed."""
    return key in _verdicts and _verdicts[key] is None


def problem(key: Tuple) -> Optional[str]:
    """What the check of ``key`` found wrong (None: passed, or not run)."""
    return _verdicts.get(key)


def reset() -> None:
    """Forget every verdict (tests)."""
    _verdicts.clear()
    timings.clear()
