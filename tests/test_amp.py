"""Mixed precision: every backbone trains under bfloat16 autocast (what
``tools/train.py --amp`` gives on CPU) with finite losses and gradients,
and the selective scan keeps its state in float32 whatever autocast says."""
from typing import List

import pytest
import torch
from torch.overrides import TorchFunctionMode

from mmsparx.models.backbones import (SparseSwin, SparseSwinDense, SpaRTAN,
                                      SparXMamba, SparXSwin)
from mmsparx.ops import available_backends, selective_scan

SPARX = dict(depths=(1, 2, 3, 2), channels=(16, 32, 48, 64), stem='v1',
             strides=(1, 1, 2, 1), ganglion_start=(None, 1, 0, 0))
SPARSESWIN = dict(embed_dims=16, depths=(1, 1, 2), num_heads=(1, 2, 2),
                  window_size=4, num_tokens=5, token_dims=32, sparta_depth=2,
                  sparta_heads=4)
BACKBONES = {
    'SparXMamba': lambda: SparXMamba(SPARX),
    'SparXSwin': lambda: SparXSwin(dict(SPARX, num_heads=(1, 2, 2, 4),
                                        window_size=4)),
    'SpaRTAN': lambda: SpaRTAN(dict(channels=(8, 16, 24, 32),
                                    depths=(1, 2, 2, 1),
                                    expand_ratios=(4, 4, 2, 2))),
    'SparseSwin': lambda: SparseSwin(SPARSESWIN, img_size=48),
    'SparseSwinDense': lambda: SparseSwinDense(SPARSESWIN, img_size=48),
}


def _tensors(out) -> List[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for item in out for t in _tensors(item)]


@pytest.mark.parametrize('name', sorted(BACKBONES))
def test_backbone_trains_under_bf16_autocast(name):
    torch.manual_seed(0)
    model = BACKBONES[name]().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images = torch.randn(2, 3, 48, 48)  # odd stage sizes: 12, 6, 3, 2
    half = []  # autocast must really run the linear layers in bfloat16
    for module in model.modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            module.register_forward_hook(
                lambda mod, args, out: half.append(
                    out.dtype == torch.bfloat16))
    targets = None
    for step in range(20):
        with torch.autocast('cpu', dtype=torch.bfloat16):
            outs = _tensors(model(images))
            if targets is None:  # fixed random targets, one per output
                targets = [torch.randn(o.shape) for o in outs]
            loss = sum((o.float() - t).pow(2).mean()
                       for o, t in zip(outs, targets))
        assert torch.isfinite(loss), f'{name} step {step}: loss {loss}'
        optimizer.zero_grad()
        loss.backward()
        bad = [n for n, p in model.named_parameters()
               if p.grad is not None and not torch.isfinite(p.grad).all()]
        assert not bad, f'{name} step {step}: non-finite grads in {bad}'
        optimizer.step()
    assert half and all(half), f'{name}: autocast did not apply'
    # Parameters stay float32 (autocast casts per op) and still finite.
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all()
               for p in model.parameters())


class _OutputDtypes(TorchFunctionMode):
    """Records the dtype of every floating tensor an op returns."""

    def __init__(self):
        super().__init__()
        self.dtypes = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor) and out.is_floating_point():
            self.dtypes.append(out.dtype)
        return out


def scan_inputs(length: int, dtype, seed: int = 0) -> dict:
    """Slow decays (A near 0): the state sums hundreds of steps, where a
    bfloat16 state would lose most of its digits."""
    g = torch.Generator().manual_seed(seed)
    b, d, n = 1, 8, 2
    return dict(u=torch.randn(b, d, length, generator=g).to(dtype),
                delta=(torch.rand(b, d, length, generator=g) * 0.1).to(dtype),
                A=-torch.rand(d, n, generator=g) * 0.05,
                B=torch.randn(b, 2, n, length, generator=g).to(dtype),
                C=torch.randn(b, 2, n, length, generator=g).to(dtype),
                D=torch.randn(d, generator=g))


def test_reference_scan_state_is_float32_under_autocast():
    inputs = scan_inputs(16, torch.bfloat16)
    recorder = _OutputDtypes()
    with torch.autocast('cpu', dtype=torch.bfloat16), recorder:
        y = selective_scan(**inputs, backend='reference')
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
    # Every intermediate (decays, states, outputs) is float32; only the
    # final cast back to the input dtype is not.
    *inside, last = recorder.dtypes
    assert len(inside) > 16 * 3 and set(inside) == {torch.float32}
    assert last == torch.bfloat16


@pytest.mark.parametrize('backend', available_backends('cpu'))
def test_scan_under_autocast_matches_a_float32_state(backend):
    length = 512
    inputs = scan_inputs(length, torch.bfloat16)
    exact = selective_scan(**{k: v.float() for k, v in inputs.items()},
                           backend='reference')
    leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = selective_scan(**leaves, backend=backend)
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
    # Only the output's rounding to bfloat16 (2^-8 relative) differs.
    torch.testing.assert_close(y.float(), exact, rtol=2 ** -7, atol=1e-2)
    y.float().pow(2).sum().backward()
    assert all(torch.isfinite(v.grad).all() for v in leaves.values())

    # A bfloat16 state drifts well past that tolerance: the check above
    # would catch a backend that kept its state in half precision.
    u, delta, A, B, C, D = (inputs[k] for k in 'u delta A B C D'.split())
    per = u.shape[1] // B.shape[1]
    B, C = B.repeat_interleave(per, 1), C.repeat_interleave(per, 1)
    state = torch.zeros(1, u.shape[1], A.shape[1], dtype=torch.bfloat16)
    ys = []
    for t in range(length):
        step = delta[:, :, t, None]
        state = (torch.exp(step * A.bfloat16()) * state +
                 step * B[..., t] * u[:, :, t, None]).bfloat16()
        ys.append((state * C[..., t]).sum(-1))
    half_state = torch.stack(ys, -1).float() + u.float() * D[:, None]
    drift = (half_state - exact).abs().max()
    assert drift > 4 * (y.float() - exact).abs().max(), drift
