"""The CUDA group norm with batch-independent statistics computes
``F.group_norm``: outputs and every gradient against float64 PyTorch (the
function is device-agnostic, so the CPU checks its numbers; on CUDA the
module takes it, which the fake-CUDA test shows by its operators)."""
import pytest
import torch
import torch.nn.functional as F

from mmsparx.analysis.cuda_census import census
from mmsparx.models.layers import GroupNorm
from mmsparx.models.layers.norms import _SplitStatsGroupNormFn
from mmsparx.models.layers.pointwise import PointwiseConv


@pytest.mark.parametrize('groups,affine', [(1, True), (4, True), (2, False)])
def test_split_statistics_match_group_norm(groups, affine):
    torch.manual_seed(0)
    # A large mean next to a small spread: the statistics must not cancel.
    x = (torch.randn(3, 8, 5, 7) * 0.5 + 3.0).double().requires_grad_()
    weight = (torch.randn(8, dtype=torch.float64) + 1).requires_grad_() \
        if affine else None
    bias = torch.randn(8, dtype=torch.float64).requires_grad_() \
        if affine else None
    cotangent = torch.randn(3, 8, 5, 7, dtype=torch.float64)
    ours = _SplitStatsGroupNormFn.apply(x, weight, bias, groups, 1e-5,
                                        torch.float64)
    ref = F.group_norm(x, groups, weight, bias, 1e-5)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    inputs = [t for t in (x, weight, bias) if t is not None]
    got = torch.autograd.grad(ours, inputs, cotangent)
    want = torch.autograd.grad(ref, inputs, cotangent)
    for name, g, w in zip(('x', 'weight', 'bias'), got, want):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-10,
                                   msg=f'grad of {name}')


def test_writes_the_dtype_it_is_asked_for():
    x = torch.randn(2, 6, 4, 4)
    weight, bias = torch.randn(6), torch.randn(6)
    out = _SplitStatsGroupNormFn.apply(x, weight, bias, 3, 1e-5,
                                       torch.bfloat16)
    assert out.dtype == torch.bfloat16
    # One rounding of the float32 result, as a cast after the norm gives.
    torch.testing.assert_close(
        out, F.group_norm(x, 3, weight, bias).to(torch.bfloat16),
        rtol=0, atol=0)


def test_module_keeps_group_norm_keys_and_cpu_numbers():
    torch.manual_seed(0)
    ours, ref = GroupNorm(2, 6), torch.nn.GroupNorm(2, 6)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 6, 3, 3)
    torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=0)


def test_cuda_takes_split_statistics_in_float32_under_autocast():
    result = census(GroupNorm(1, 16),
                    lambda: torch.randn(2, 16, 8, 8, device='cuda',
                                        dtype=torch.float16),
                    lambda m, x: m(x), train=False, amp_dtype=torch.float16)
    ops = set(result.kernels)
    assert 'aten.var_mean.correction' in ops
    assert not any('native_group_norm' in op for op in ops)
    # The float16 input is normed in float32, as autocast runs group norms.
    assert 'aten._to_copy.default' in ops


def test_product_after_the_norm_reads_it_without_a_cast():
    # PointwiseConv.normed under CUDA autocast: the norm writes float16,
    # the convolution takes it as it is (no cast of the normed map).
    conv, norm = PointwiseConv(16, 8), GroupNorm(1, 16)
    module = torch.nn.ModuleList([conv, norm])
    result = census(module, lambda: torch.randn(2, 16, 8, 8, device='cuda'),
                    lambda m, x: m[0].normed(x, m[1]), train=False,
                    amp_dtype=torch.float16)
    # Casts left: the weight and bias down for the convolution; none of the
    # normed map.
    assert result.kernels['aten._to_copy.default'] == 2
    assert result.bytes['aten._to_copy.default'] == (16 * 8 + 8) * (4 + 2)
