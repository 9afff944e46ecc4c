"""The weight check's max |x| (FiniteCheckHook runs it after every step):
the CPU's min / max pass gives what the fused inf-norm gives, NaN and inf
included, over the dtypes a model holds."""
import math

import pytest
import torch

from mmsparx.engine.weight_guard import _peaks, peak_abs


def tensors(bad: float = 0.0) -> list:
    g = torch.Generator().manual_seed(0)
    found = [torch.randn(shape, generator=g).to(dtype) * scale
             for shape, dtype, scale in (((7, 5), torch.float32, 3.0),
                                         ((64, ), torch.float16, 0.5),
                                         ((3, 3, 2), torch.bfloat16, 9.0),
                                         ((11, ), torch.float64, 2.0))]
    if bad:
        found[2].view(-1)[4] = bad
    return found


@pytest.mark.parametrize('bad', [0.0, -50.0, float('nan'), float('inf'),
                                 -float('inf')])
def test_cpu_peaks_equal_the_fused_inf_norm(bad):
    group = tensors(bad)
    fused = torch.stack([n.float() for n in torch._foreach_norm(
        group, float('inf'))])
    torch.testing.assert_close(_peaks(group), fused, rtol=0, atol=0,
                               equal_nan=True)
    expected = max(float(t.double().abs().max()) for t in group)
    got = peak_abs(group)
    if math.isnan(bad):
        assert math.isnan(got)
    else:
        assert got == expected


def test_integer_and_empty_tensors_are_left_out():
    assert peak_abs([torch.arange(5), torch.empty(0)]) == 0.0
    assert peak_abs([torch.full((3, ), -4.0), torch.tensor([200])]) == 4.0
