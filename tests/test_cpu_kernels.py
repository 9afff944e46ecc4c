"""The fused CPU inference kernels compute exactly the PyTorch functions
they replace (same parameters, same numbers)."""
import pytest
import torch
import torch.nn.functional as F

from mmsparx.models.layers.common import DepthwiseConv, PointwiseConv
from mmsparx.ops.selective_scan import _cpu_kernel

needs_kernel = pytest.mark.skipif(
    _cpu_kernel() is None, reason='CPU kernels not built (MMSPARX_NO_EXT=1)')


@needs_kernel
@pytest.mark.parametrize('kernel', [3, 5])
@pytest.mark.parametrize('residual,act', [(True, 'gelu'), (True, None),
                                          (False, 'silu'), (False, None)])
@pytest.mark.parametrize('size', [(7, 9), (1, 1), (2, 13), (16, 16)])
def test_depthwise_fused_equals_pytorch(kernel, residual, act, size,
                                        monkeypatch):
    torch.manual_seed(0)
    conv = DepthwiseConv(6, kernel)
    monkeypatch.setattr(conv, 'MIN_KERNEL_PIXELS', 1)
    x = torch.randn(2, 6, *size)
    expected = conv(x)
    if residual:
        expected = expected + x
    expected = {'gelu': F.gelu, 'silu': F.silu, None: lambda t: t}[act](
        expected)
    with torch.no_grad():
        assert conv._kernel_applies(x)
        out = conv.fused(x, residual=residual, act=act)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@needs_kernel
def test_depthwise_fused_leaves_autograd_and_autocast_to_pytorch():
    conv = DepthwiseConv(4, 3)
    x = torch.randn(1, 4, 28, 29, requires_grad=True)
    with torch.no_grad():
        assert conv._kernel_applies(x)
        assert not conv._kernel_applies(x[..., :20, :20].contiguous())
    assert not conv._kernel_applies(x)  # training: autograd needs a graph
    conv.fused(x, residual=True, act='gelu').sum().backward()
    assert x.grad is not None and conv.weight.grad is not None
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        assert not conv._kernel_applies(x)
        assert conv.fused(x, act='silu').dtype == torch.bfloat16
    assert not conv._kernel_applies(x.detach().to(torch.float64))


@pytest.mark.parametrize('bias', [True, False])
@pytest.mark.parametrize('grads', ['both', 'input', 'weight'])
def test_pointwise_conv_is_a_1x1_convolution(bias, grads):
    """Same keys, outputs and gradients (input, weight, bias: the training
    Function's own backward) as a 1x1 convolution in float64."""
    torch.manual_seed(0)
    conv = PointwiseConv(5, 7, bias=bias)
    assert sorted(conv.state_dict()) == sorted(
        torch.nn.Conv2d(5, 7, 1, bias=bias).state_dict())
    conv.weight.requires_grad_(grads != 'input')
    x = torch.randn(3, 5, 4, 6, requires_grad=grads != 'weight')
    out = conv(x)
    params = [p for p in conv.parameters() if p.requires_grad]
    wanted = ([x] if x.requires_grad else []) + params
    expected = F.conv2d(x.double(), conv.weight.double(),
                        None if conv.bias is None else conv.bias.double())
    torch.testing.assert_close(out, expected.float(), rtol=1e-5, atol=1e-5)
    upstream = torch.randn_like(out)
    grads_out = torch.autograd.grad((out * upstream).sum(), wanted)
    ref = torch.autograd.grad((expected * upstream.double()).sum(), wanted)
    for grad, ref_grad in zip(grads_out, ref):
        torch.testing.assert_close(grad, ref_grad.float(), rtol=1e-4,
                                   atol=1e-4)
    with torch.no_grad():  # inference: the batched product, no Function
        torch.testing.assert_close(conv(x), expected.float(), rtol=1e-5,
                                   atol=1e-5)
    # channels-last input takes the convolution: same numbers.
    last = x.detach().contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(conv(last), expected.float().detach(),
                               rtol=1e-5, atol=1e-5)


@needs_kernel
@pytest.mark.parametrize('kernel,bias', [(3, True), (5, False)])
@pytest.mark.parametrize('size', [(1, 1), (2, 13), (9, 7), (30, 29)])
@pytest.mark.parametrize('grads', ['both', 'input', 'weight'])
def test_depthwise_training_kernel_gives_pytorch_gradients(kernel, bias, size,
                                                           grads):
    """Training runs the C++ convolution and its backward; output and
    gradients equal PyTorch's convolution computed in float64."""
    torch.manual_seed(0)
    conv = DepthwiseConv(6, kernel, bias=bias)
    conv.requires_grad_(grads != 'input')
    x = torch.randn(2, 6, *size, requires_grad=grads != 'weight')
    assert conv._trains_on_kernel(x)
    out = conv(x)
    assert type(out.grad_fn).__name__ == '_DepthwiseFnBackward'
    grad_out = torch.randn_like(out)
    wanted = [t for t in (x, conv.weight, conv.bias)
              if t is not None and t.requires_grad]
    got = torch.autograd.grad(out, wanted, grad_out)
    ref_in = [t.detach().double().requires_grad_(t.requires_grad)
              if t is not None else None for t in (x, conv.weight, conv.bias)]
    ref = F.conv2d(ref_in[0], ref_in[1], ref_in[2], padding=kernel // 2,
                   groups=6)
    ref_grads = torch.autograd.grad(
        ref, [t for t in ref_in if t is not None and t.requires_grad],
        grad_out.double())
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    for grad, ref_grad in zip(got, ref_grads):
        torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-4,
                                   atol=1e-4)
