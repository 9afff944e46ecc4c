"""The fused CPU inference kernels compute exactly the PyTorch functions
they replace (same parameters, same numbers)."""
import copy
import importlib

import pytest
import torch
import torch.nn.functional as F

from mmsparx.models.layers import depthwise
from mmsparx.models.layers.depthwise import (DepthwiseConv, fold_batchnorm,
                                             pointwise_then_depthwise)
from mmsparx.models.layers.ffn import ConvFFN
from mmsparx.models.layers.pointwise import PointwiseConv
from mmsparx.models.layers.dmca import DMCA
from mmsparx.ops.kernels import cpu_kernel

# The module, not the function ``mmsparx.ops`` exports under its name.
SCAN_MODULE = importlib.import_module('mmsparx.ops.kernels')

needs_kernel = pytest.mark.skipif(
    cpu_kernel() is None, reason='CPU kernels not built (MMSPARX_NO_EXT=1)')


@needs_kernel
@pytest.mark.parametrize('kernel', [3, 5])
@pytest.mark.parametrize('residual,act', [(True, 'gelu'), (True, None),
                                          (False, 'silu'), (False, None)])
@pytest.mark.parametrize('size', [(7, 9), (1, 1), (2, 13), (16, 16)])
@pytest.mark.parametrize('in_bias', [False, True])
def test_depthwise_fused_equals_pytorch(kernel, residual, act, size, in_bias,
                                        monkeypatch):
    torch.manual_seed(0)
    conv = DepthwiseConv(6, kernel)
    monkeypatch.setattr(conv, 'MIN_KERNEL_PIXELS', 1)
    x = torch.randn(2, 6, *size)
    shift = torch.randn(6) if in_bias else None
    u = x + shift.view(1, -1, 1, 1) if in_bias else x
    expected = conv(u)
    if residual:
        expected = expected + u
    expected = {'gelu': F.gelu, 'silu': F.silu, None: lambda t: t}[act](
        expected)
    with torch.no_grad():
        assert conv._kernel_applies(x)
        out = conv.fused(x, residual=residual, act=act, in_bias=shift)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@needs_kernel
@pytest.mark.parametrize('residual,act', [(True, 'gelu'), (False, 'silu')])
def test_pointwise_bias_rides_the_depthwise_kernel(residual, act,
                                                   monkeypatch):
    """In inference the 1x1 product runs without its bias and the kernel
    adds it to the map it loads: the same numbers as the two layers."""
    torch.manual_seed(0)
    pointwise, depthwise = PointwiseConv(4, 8), DepthwiseConv(8, 3)
    x = torch.randn(2, 4, 14, 15)
    expected = depthwise.fused(pointwise(x), residual, act)  # autograd path
    counting = _CountingKernel(cpu_kernel())
    monkeypatch.setattr(SCAN_MODULE, 'cpu_kernel', lambda: counting)
    with torch.no_grad():
        out = pointwise_then_depthwise(pointwise, depthwise, x, residual, act)
    assert counting.calls == 1 and counting.in_bias_given
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@needs_kernel
def test_depthwise_fused_paths():
    """Inference: the fused kernel; float32 CPU training: the fused training
    kernels; autocast and other dtypes: PyTorch ops, as before."""
    conv = DepthwiseConv(4, 3)
    x = torch.randn(1, 4, 28, 29, requires_grad=True)
    with torch.no_grad():
        assert conv._kernel_applies(x)
        assert conv._kernel_applies(x[..., :14, :14].contiguous())
        # oneDNN wins below 14 x 14
        assert not conv._kernel_applies(x[..., :13, :14].contiguous())
        assert conv.fused(x, residual=True, act='gelu').grad_fn is None
    assert not conv._kernel_applies(x)  # training: autograd needs a graph
    assert conv._trains_on_kernel(x)
    out = conv.fused(x, residual=True, act='gelu')
    assert type(out.grad_fn).__name__ == '_DepthwiseActFnBackward'
    out.sum().backward()
    assert x.grad is not None and conv.weight.grad is not None
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert not conv._trains_on_kernel(x)
        out = conv.fused(x, act='silu')
        assert out.dtype == torch.bfloat16
        assert type(out.grad_fn).__name__ == 'SiluBackward0'
        with torch.no_grad():
            assert not conv._kernel_applies(x)
            assert conv.fused(x, act='silu').dtype == torch.bfloat16
    assert not conv._kernel_applies(x.detach().to(torch.float64))
    conv64 = DepthwiseConv(4, 3).double()
    x64 = x.detach().double().requires_grad_()
    assert not conv64._trains_on_kernel(x64)
    out = conv64.fused(x64, residual=True, act='gelu')
    assert out.dtype == torch.float64
    assert type(out.grad_fn).__name__ == 'GeluBackward0'


@pytest.mark.parametrize('bias', [True, False])
@pytest.mark.parametrize('grads', ['both', 'input', 'weight'])
@pytest.mark.parametrize('size', [(4, 6), (9, 8)])
def test_pointwise_conv_is_a_1x1_convolution(bias, grads, size):
    """Same keys, outputs and gradients (input, weight, bias: the training
    Function's own backward) as a 1x1 convolution in float64; inference on
    maps up to FOLD_BATCH_MAX_PIXELS as one product over the batch."""
    torch.manual_seed(0)
    conv = PointwiseConv(5, 7, bias=bias)
    assert sorted(conv.state_dict()) == sorted(
        torch.nn.Conv2d(5, 7, 1, bias=bias).state_dict())
    assert (size[0] * size[1] <= conv.FOLD_BATCH_MAX_PIXELS) == (size[0] == 4)
    conv.weight.requires_grad_(grads != 'input')
    x = torch.randn(3, 5, *size, requires_grad=grads != 'weight')
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


def _reference_fused(x, conv, residual, act):
    """The PyTorch composition in float64, on copies that record gradients
    where the originals do."""
    ref_in = [t.detach().double().requires_grad_(t.requires_grad)
              if t is not None else None for t in (x, conv.weight, conv.bias)]
    out = F.conv2d(ref_in[0], ref_in[1], ref_in[2],
                   padding=conv.kernel_size[0] // 2, groups=conv.groups)
    if residual:
        out = out + ref_in[0]
    out = {'gelu': F.gelu, 'silu': F.silu, None: lambda t: t}[act](out)
    return out, [t for t in ref_in if t is not None and t.requires_grad]


@needs_kernel
@pytest.mark.parametrize('keep_pre', [True, False])
@pytest.mark.parametrize('kernel', [3, 5])
@pytest.mark.parametrize('bias', [True, False])
@pytest.mark.parametrize('residual', [False, True])
@pytest.mark.parametrize('act', [None, 'gelu', 'silu'])
@pytest.mark.parametrize('size', [(1, 3), (9, 7), (31, 29)])
def test_depthwise_fused_training_gives_pytorch_gradients(
        keep_pre, kernel, bias, residual, act, size, monkeypatch):
    """Training ``fused`` is one C++ function each way (the pre-activation
    kept or recomputed in backward); output and gradients of x, weight and
    bias equal the PyTorch composition computed in float64."""
    monkeypatch.setattr(depthwise, 'KEEP_PRE_MAX_BYTES',
                        1 << 30 if keep_pre else 0)
    torch.manual_seed(0)
    conv = DepthwiseConv(6, kernel, bias=bias)
    x = torch.randn(2, 6, *size, requires_grad=True)
    assert conv._trains_on_kernel(x)
    out = conv.fused(x, residual=residual, act=act)
    assert type(out.grad_fn).__name__ == '_DepthwiseActFnBackward'
    grad_out = torch.randn_like(out)
    wanted = [t for t in (x, conv.weight, conv.bias) if t is not None]
    got = torch.autograd.grad(out, wanted, grad_out)
    ref, ref_wanted = _reference_fused(x, conv, residual, act)
    ref_grads = torch.autograd.grad(ref, ref_wanted, grad_out.double())
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    for grad, ref_grad in zip(got, ref_grads):
        torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-4,
                                   atol=1e-4)


@needs_kernel
@pytest.mark.parametrize('grads', ['input', 'weight'])
def test_depthwise_fused_training_partial_gradients(grads):
    """A frozen layer (input gradient only) or a leaf input (weight and bias
    only), through the residual and GELU, a non-contiguous output grad."""
    torch.manual_seed(0)
    conv = DepthwiseConv(5, 3)
    conv.requires_grad_(grads == 'weight')
    x = torch.randn(3, 5, 11, 8, requires_grad=grads == 'input')
    out = conv.fused(x, residual=True, act='gelu')
    assert type(out.grad_fn).__name__ == '_DepthwiseActFnBackward'
    grad_out = torch.randn(3, 5, 8, 11).transpose(-1, -2)
    wanted = [t for t in (x, conv.weight, conv.bias) if t.requires_grad]
    got = torch.autograd.grad(out, wanted, grad_out)
    ref, ref_wanted = _reference_fused(x, conv, True, 'gelu')
    ref_grads = torch.autograd.grad(ref, ref_wanted, grad_out.double())
    assert len(got) == len(ref_grads) == (1 if grads == 'input' else 2)
    for grad, ref_grad in zip(got, ref_grads):
        torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-4,
                                   atol=1e-4)


def _random_batchnorm(channels: int) -> torch.nn.BatchNorm2d:
    norm = torch.nn.BatchNorm2d(channels).eval()
    with torch.no_grad():
        norm.running_mean.normal_()
        norm.running_var.uniform_(0.5, 2.0)
        norm.weight.normal_()
        norm.bias.normal_()
    return norm


@pytest.mark.parametrize('bias', [True, False])
def test_folded_batchnorm_is_the_conv_then_the_norm(bias):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 6, 3, padding=1, bias=bias).double()
    norm = _random_batchnorm(6).double()
    x = torch.randn(2, 4, 5, 7, dtype=torch.float64)
    weight, shift = fold_batchnorm(conv.weight, conv.bias, norm)
    torch.testing.assert_close(F.conv2d(x, weight, shift, padding=1),
                               norm(conv(x)))


class _CountingKernel:
    """The compiled module, counting its depthwise_conv_act calls."""

    def __init__(self, kernel):
        self.kernel, self.calls, self.in_bias_given = kernel, 0, False

    def depthwise_conv_act(self, *args):
        self.calls += 1
        self.in_bias_given = args[-1].numel() > 0
        return self.kernel.depthwise_conv_act(*args)

    def __getattr__(self, name):
        return getattr(self.kernel, name)


@needs_kernel
@pytest.mark.parametrize('act', ['gelu', None])
def test_depthwise_with_folded_batchnorm_equals_pytorch(act, monkeypatch):
    torch.manual_seed(0)
    conv = DepthwiseConv(5, 3, bias=False)
    norm = _random_batchnorm(5)
    x = torch.randn(2, 5, 14, 15)
    expected = norm(conv(x))
    expected = F.gelu(expected) if act else expected
    counting = _CountingKernel(cpu_kernel())
    monkeypatch.setattr(SCAN_MODULE, 'cpu_kernel', lambda: counting)
    with torch.no_grad():
        out = conv.fused_bn(x, norm, act=act)
    assert counting.calls == 1
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    # A norm that trains (parameters with gradients, or batch statistics)
    # is not folded.
    conv.requires_grad_(False)
    out = conv.fused_bn(x, norm, act=act)
    out.sum().backward()
    assert norm.weight.grad is not None and counting.calls == 1
    norm.train()
    with torch.no_grad():
        expected = copy.deepcopy(norm)(conv(x))
        expected = F.gelu(expected) if act else expected
        torch.testing.assert_close(conv.fused_bn(x, norm, act=act), expected)
    assert counting.calls == 1


@needs_kernel
def test_dmca_on_the_kernels_equals_its_pytorch_function(monkeypatch):
    """A ganglion layer's DMCA at maps where the kernels run (its d_proj's
    conv + BN + GELU folded into one call, its fusion conv + GELU in
    another) against the same module in float64, where none run."""
    torch.manual_seed(0)
    dmca = DMCA(8, num_inputs=2, out_dim=16, sr_ratio=2).eval()
    for module in dmca.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.load_state_dict(_random_batchnorm(
                module.num_features).state_dict())
    x = torch.randn(2, 8, 16, 14)
    inputs = [torch.randn(2, 8, 16, 14) for _ in range(2)]
    counting = _CountingKernel(cpu_kernel())
    monkeypatch.setattr(SCAN_MODULE, 'cpu_kernel', lambda: counting)
    with torch.inference_mode():
        out = dmca(x, inputs)
        expected = copy.deepcopy(dmca).double()(
            x.double(), [t.double() for t in inputs])
    assert counting.calls == 2
    assert out.shape == (2, 16, 16, 14)
    torch.testing.assert_close(out.double(), expected, rtol=1e-4, atol=1e-5)


def test_conv_ffn_runs_big_batches_in_chunks_with_the_same_numbers():
    torch.manual_seed(0)
    ffn = ConvFFN(4, 16).eval()
    x = torch.randn(5, 4, 14, 14)
    image = 16 * 14 * 14 * 4  # bytes of one image's hidden map
    ffn.CHUNK_BYTES = 2 * image + 1
    assert ffn._chunk(x) == 5  # recording gradients: the whole batch
    with torch.no_grad():
        assert ffn._chunk(x) == 2
        whole = ffn._mlp(x)
        torch.testing.assert_close(ffn(x), whole)
        ffn.CHUNK_BYTES = ConvFFN.CHUNK_BYTES
        assert ffn._chunk(x) == 5
