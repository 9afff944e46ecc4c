"""The lane-wise scan and reduce that interpreted runs use
(interpreter_lanes.py) give bit for bit the numbers of Triton's own
element-by-element versions, for the combine functions our kernels use,
forwards and in reverse. Runs under ``TRITON_INTERPRET=1``
(test_triton_interpreter.py starts that run)."""
import os

import pytest
import torch

INTERPRETED = os.environ.get('TRITON_INTERPRET') == '1'
pytestmark = pytest.mark.skipif(
    not INTERPRETED, reason='interpreter only: test_triton_interpreter.py '
    'runs this file interpreted')

triton = pytest.importorskip('triton')
import triton.language as tl  # noqa: E402
from triton.runtime import interpreter  # noqa: E402

import interpreter_lanes  # noqa: E402
from mmsparx.ops.triton_cross_kernels import _combine, _mul  # noqa: E402
from mmsparx.ops.triton_scan import _linear_combine  # noqa: E402

BD, T = 8, 64


@triton.jit
def _scans(a_ptr, b_ptr, out_ptr, BD: tl.constexpr, T: tl.constexpr):
    at = tl.arange(0, BD)[:, None] * T + tl.arange(0, T)[None, :]
    a = tl.load(a_ptr + at)
    b = tl.load(b_ptr + at)
    p, q = tl.associative_scan((a, b), 1, _combine)
    r, s = tl.associative_scan((a, b), 1, _linear_combine, reverse=True)
    tl.store(out_ptr + at, p)
    tl.store(out_ptr + BD * T + at, q)
    tl.store(out_ptr + 2 * BD * T + at, r)
    tl.store(out_ptr + 3 * BD * T + at, s)
    rows = tl.arange(0, BD)
    tl.store(out_ptr + 4 * BD * T + rows, tl.reduce(a, 1, _mul))
    tl.store(out_ptr + 4 * BD * T + BD + rows, tl.reduce(b, 1, _mul))


def run(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(4 * BD * T + 2 * BD)
    _scans[(1, )](a, b, out, BD=BD, T=T)
    return out


def test_lanewise_scan_and_reduce_equal_the_element_loop(monkeypatch):
    assert interpreter.ScanOps.generic_scan is interpreter_lanes.lanewise_scan
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(BD, T, generator=gen) * 0.5 + 0.6  # decays around 1
    b = torch.randn(BD, T, generator=gen)
    fast = run(a, b)
    monkeypatch.setattr(interpreter.ScanOps, 'generic_scan',
                        interpreter_lanes.ORIGINAL['scan'])
    monkeypatch.setattr(interpreter.ReduceOps, 'generic_reduce',
                        interpreter_lanes.ORIGINAL['reduce'])
    slow = run(a, b)
    assert torch.equal(fast, slow)
    # And both are the recurrence: h_t = a_t h_{t-1} + b_t from h = 0.
    h, states = torch.zeros(BD, dtype=torch.float64), []
    for t in range(T):
        h = a[:, t].double() * h + b[:, t].double()
        states.append(h)
    q = fast[BD * T:2 * BD * T].view(BD, T)
    torch.testing.assert_close(q.double(), torch.stack(states, 1),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast[4 * BD * T:4 * BD * T + BD],
                               a.prod(1), rtol=1e-5, atol=0)
