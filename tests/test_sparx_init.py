"""SparX-Mamba and SparX-Swin start from the authors' initialisation: their
models apply, at construction, N(0, 0.02) to every Conv2d / Linear weight,
zero biases, norms 1 / 0, and leave the SSM's plain parameters (x_proj, dt,
A, D) and the layer scales as their own initialisers set them.

Without it (PyTorch's defaults) the depthwise 3x3 / 5x5 convolutions start
with weights of std ~0.19 / ~0.12 instead of 0.02: every ``x + DWConv(x)``
adds a random high-pass filter of its input, and Mask R-CNN trained from
scratch on the generated set reached bbox mAP 0.069 instead of 0.128 after 6
epochs (configs/demo/README.md)."""
import math

import pytest
import torch
from torch import nn

from mmsparx.models.backbones import SparXMamba, SparXSwin
from mmsparx.models.layers import SS2D
from mmsparx.models.layers.bricks import LayerScale

SMALL = dict(depths=(1, 1, 3, 1), channels=(48, 96, 192, 288), stem='v1',
             strides=(1, 1, 2, 1), ganglion_start=(None, 1, 0, 0))


def build(kind):
    torch.manual_seed(0)
    if kind == 'mamba':
        return SparXMamba(SMALL, out_norm='ln')
    return SparXSwin('t', out_norm='ln')


@pytest.mark.parametrize('kind', ['mamba', 'swin'])
def test_convs_and_linears_are_trunc_normal_002(kind):
    model = build(kind)
    depthwise = 0
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        weight = module.weight.detach()
        # Truncated at +-2 (absolute, as the authors' call): no bound is
        # reached at std 0.02, the largest of ~1e5 draws is ~0.1.
        assert weight.abs().max() < 0.15, name
        if weight.numel() >= 1000:
            assert 0.018 < weight.std().item() < 0.022, (name, weight.std())
        if module.bias is not None:
            assert not module.bias.any(), name
        if isinstance(module, nn.Conv2d) and module.groups > 1 and \
                module.groups == module.in_channels:
            depthwise += 1
    assert depthwise > 10  # the DPE, FFN and SS2D convolutions were seen


@pytest.mark.parametrize('kind', ['mamba', 'swin'])
def test_norms_are_one_and_zero(kind):
    for name, module in build(kind).named_modules():
        if isinstance(module, (nn.LayerNorm, nn.GroupNorm,
                               nn.BatchNorm2d)) and module.weight is not None:
            assert (module.weight == 1).all() and not module.bias.any(), name


def test_ssm_parameters_and_layer_scales_keep_their_own_init():
    model = build('mamba')
    mixers = [m for m in model.modules() if isinstance(m, SS2D)]
    assert len(mixers) == 6
    for mixer in mixers:
        inner = mixer.Ds.numel() // 4
        assert (mixer.Ds == 1).all()
        n = mixer.A_logs.shape[1]
        assert torch.equal(mixer.A_logs[0], torch.log(torch.arange(
            1, n + 1, dtype=torch.float32)))
        dt = nn.functional.softplus(mixer.dt_projs_bias)
        assert dt.min() >= 1e-4 - 1e-7 and dt.max() <= 0.1 + 1e-6
        # x_proj: nn.Linear's default bound 1/sqrt(fan_in), not 0.02.
        bound = 1 / math.sqrt(mixer.x_proj_weight.shape[1])
        assert mixer.x_proj_weight.abs().max() <= bound
        assert mixer.x_proj_weight.std() > 0.5 * bound / math.sqrt(3)
        assert inner == mixer.x_proj_weight.shape[1]
    scales = [m for m in model.modules() if isinstance(m, LayerScale)]
    assert scales and all((s.weight == 1).all() and not s.bias.any()
                          for s in scales)
