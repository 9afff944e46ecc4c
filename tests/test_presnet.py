"""PResNet (RT-DETR's ResNet-vd): sizes against the official structure and
mmdet's ResNetV1d, the official key names, the forward against a functional
re-computation, odd input sizes, freezing, frozen BN, checkpointing,
argument errors and registration; plus SpaRTAN used as RT-DETR's backbone."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmsparx.archs.presnet import ARCH_SETTINGS, resolve_depth
from mmsparx.models.backbones import PResNet, SpaRTAN
from mmsparx.models.backbones.presnet import FrozenBatchNorm2d

DEPTHS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3),
          101: (3, 4, 23, 3)}


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def hand_count(depth: int) -> int:
    """Parameters from the official structure, written out: conv weights
    (no bias) plus 2 per BN channel."""
    def conv_bn(c_in, c_out, k):
        return c_in * c_out * k * k + 2 * c_out

    total = conv_bn(3, 32, 3) + conv_bn(32, 32, 3) + conv_bn(32, 64, 3)
    c_in, widths = 64, (64, 128, 256, 512)
    for width, n in zip(widths, DEPTHS[depth]):
        for j in range(n):
            if depth < 50:
                total += conv_bn(c_in, width, 3) + conv_bn(width, width, 3)
                c_out = width
            else:
                c_out = 4 * width
                total += (conv_bn(c_in, width, 1) + conv_bn(width, width, 3)
                          + conv_bn(width, c_out, 1))
            if j == 0:  # every stage's first block projects its shortcut
                total += conv_bn(c_in, c_out, 1)
            c_in = c_out
    return total


def randomize_norms(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics and affine values, so that a wrong eps,
    a swapped buffer or a skipped BN shows in the outputs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(c, generator=gen) * 0.5 + 0.5)
                m.bias.copy_(torch.randn(c, generator=gen) * 0.1)


# --- sizes ---------------------------------------------------------------

@pytest.mark.parametrize('depth,params', [
    (18, 11_199_968), (34, 21_308_128), (50, 23_527_264),
    (101, 42_519_392)])
def test_parameter_counts_match_the_official_structure(depth, params):
    model = PResNet(depth)
    assert n_params(model) == params == hand_count(depth)


def test_the_first_stage_has_the_extra_projection_resnetv1d_lacks():
    from mmdet.models.backbones import ResNetV1d
    extra = 64 * 64 + 2 * 64  # 1x1 conv 64 -> 64 and its BN
    assert extra == 4_224
    for depth in (18, 34):
        ours = n_params(PResNet(depth))
        assert n_params(ResNetV1d(depth=depth)) == ours - extra
    assert n_params(ResNetV1d(depth=18)) == 11_195_744
    # Bottleneck stages project their first shortcut anyway (64 -> 256).
    assert n_params(ResNetV1d(depth=50)) == n_params(PResNet(50))
    short = PResNet(18).res_layers[0].blocks[0].short
    assert short.conv.weight.shape == (64, 64, 1, 1)
    assert short.conv.stride == (1, 1)


def test_official_state_dict_keys_and_shapes():
    state = PResNet(18).state_dict()
    expected = {
        'conv1.conv1_1.conv.weight': (32, 3, 3, 3),
        'conv1.conv1_2.conv.weight': (32, 32, 3, 3),
        'conv1.conv1_3.conv.weight': (64, 32, 3, 3),
        'conv1.conv1_3.norm.running_var': (64, ),
        'res_layers.0.blocks.0.short.conv.weight': (64, 64, 1, 1),
        'res_layers.0.blocks.0.short.norm.weight': (64, ),
        'res_layers.1.blocks.0.branch2a.conv.weight': (128, 64, 3, 3),
        'res_layers.1.blocks.0.short.conv.conv.weight': (128, 64, 1, 1),
        'res_layers.1.blocks.0.short.conv.norm.bias': (128, ),
        'res_layers.3.blocks.1.branch2b.norm.num_batches_tracked': (),
    }
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    assert not any('blocks.1.short' in k for k in state)
    # 20 ConvBN (3 stem, 8 blocks x 2, 4 shortcuts) x 6 entries each.
    assert len(state) == (3 + 16 + 4) * 6
    r50 = PResNet(50).state_dict()
    assert r50['res_layers.0.blocks.0.short.conv.weight'].shape == (
        256, 64, 1, 1)
    assert r50['res_layers.2.blocks.0.branch2c.conv.weight'].shape == (
        1024, 256, 1, 1)
    assert r50['res_layers.2.blocks.0.short.conv.conv.weight'].shape == (
        1024, 512, 1, 1)


def test_variants_are_data():
    assert sorted(ARCH_SETTINGS) == [18, 34, 50, 101]
    assert resolve_depth(34)['out_channels'] == (64, 128, 256, 512)
    assert resolve_depth(101)['out_channels'] == (256, 512, 1024, 2048)
    # Variant 'b': 7x7 stem and strided 1x1 shortcuts without a pool.
    model = PResNet(18, variant='b')
    assert model.conv1.conv1_1.conv.weight.shape == (64, 3, 7, 7)
    short = model.res_layers[1].blocks[0].short
    assert short.conv.stride == (2, 2)
    assert n_params(model) == hand_count(18) - (
        (3 * 32 + 32 * 32 + 32 * 64) * 9 + 2 * (32 + 32 + 64)) + (
        3 * 64 * 49 + 2 * 64)
    # Variant 'a' strides a bottleneck's first 1x1, 'd' its 3x3.
    a = PResNet(50, variant='a').res_layers[1].blocks[0]
    d = PResNet(50).res_layers[1].blocks[0]
    assert (a.branch2a.conv.stride, a.branch2b.conv.stride) == ((2, 2), (1, 1))
    assert (d.branch2a.conv.stride, d.branch2b.conv.stride) == ((1, 1), (2, 2))


# --- forward ---------------------------------------------------------------

def reference_forward(state: dict, x: torch.Tensor, depth: int) -> list:
    """The official computation with functional ops on the state dict
    (eval mode): deep stem, max-pool, blocks, avg-pool shortcuts."""
    def cbn(prefix, x, stride=1, relu=False):
        w = state[prefix + '.conv.weight']
        x = F.conv2d(x, w, stride=stride, padding=w.shape[-1] // 2)
        x = F.batch_norm(x, state[prefix + '.norm.running_mean'],
                         state[prefix + '.norm.running_var'],
                         state[prefix + '.norm.weight'],
                         state[prefix + '.norm.bias'], False, 0.0, 1e-5)
        return F.relu(x) if relu else x

    x = cbn('conv1.conv1_1', x, 2, True)
    x = cbn('conv1.conv1_2', x, 1, True)
    x = cbn('conv1.conv1_3', x, 1, True)
    x = F.max_pool2d(x, 3, 2, 1)
    outs = []
    for i, n in enumerate(DEPTHS[depth]):
        for j in range(n):
            p = f'res_layers.{i}.blocks.{j}.'
            s = 2 if i > 0 and j == 0 else 1
            if depth < 50:
                y = cbn(p + 'branch2b', cbn(p + 'branch2a', x, s, True))
            else:
                y = cbn(p + 'branch2a', x, 1, True)
                y = cbn(p + 'branch2c', cbn(p + 'branch2b', y, s, True))
            if j > 0:
                short = x
            elif s == 1:
                short = cbn(p + 'short', x)
            else:
                short = cbn(p + 'short.conv',
                            F.avg_pool2d(x, 2, 2, ceil_mode=True))
            x = F.relu(y + short)
        outs.append(x)
    return outs


@pytest.mark.parametrize('depth', [18, 50])
def test_forward_equals_the_functional_reference(depth):
    torch.manual_seed(0)
    model = PResNet(depth, out_indices=(0, 1, 2, 3)).eval()
    randomize_norms(model)
    x = torch.randn(1, 3, 33, 47)  # odd: ceil-mode pools see edge windows
    with torch.no_grad():
        outs = model(x)
        ref = reference_forward(model.state_dict(), x, depth)
    for out, expect in zip(outs, ref):
        torch.testing.assert_close(out, expect, rtol=1e-4, atol=1e-5)


def test_avg_pool_shortcut_by_hand():
    """Stage 1's shortcut on a 3x3 map: ceil-mode 2x2 means (edge windows
    average only what they cover), then an identity 1x1 conv and BN."""
    model = PResNet(18).eval()
    short = model.res_layers[1].blocks[0].short
    with torch.no_grad():
        short.conv.conv.weight.zero_()
        short.conv.conv.weight[:64, :, 0, 0] = torch.eye(64)
    x = torch.zeros(1, 64, 3, 3)
    x[0, 0] = torch.tensor([[1., 2., 3.], [4., 5., 6.], [7., 8., 9.]])
    with torch.no_grad():
        out = short(x)
    expect = torch.tensor([[3.0, 4.5], [7.5, 9.0]]) / (1 + 1e-5) ** 0.5
    assert out.shape == (1, 128, 2, 2)
    torch.testing.assert_close(out[0, 0], expect)
    assert out[0, 1:].abs().max() == 0


@pytest.mark.parametrize('out_indices', [(0, ), (1, ), (2, ), (3, ),
                                         (1, 2, 3), (0, 1, 2, 3), (-1, )])
@pytest.mark.parametrize('depth,channels', [(18, (64, 128, 256, 512)),
                                            (50, (256, 512, 1024, 2048))])
def test_output_shapes_strides_channels(depth, channels, out_indices):
    model = PResNet(depth, out_indices=out_indices).eval()
    stages = sorted({i % 4 for i in out_indices})
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 96))
    assert len(outs) == len(stages)
    for out, i in zip(outs, stages):
        stride = 4 * 2**i
        assert out.shape == (1, channels[i], 64 // stride, 96 // stride)
    assert model.out_channels == [channels[i] for i in stages]
    assert model.out_strides == [4 * 2**i for i in stages]


@pytest.mark.parametrize('size,expect', [
    ((31, 45), [(8, 12), (4, 6), (2, 3), (1, 2)]),
    ((33, 33), [(9, 9), (5, 5), (3, 3), (2, 2)]),
    ((112, 137), [(28, 35), (14, 18), (7, 9), (4, 5)]),
])
def test_odd_input_sizes(size, expect):
    model = PResNet(18, out_indices=(0, 1, 2, 3)).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *size))
    assert [tuple(o.shape[-2:]) for o in outs] == expect


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = PResNet(18, out_indices=(0, 1, 2, 3)).train()
    outs = model(torch.randn(2, 3, 64, 64))
    sum(o.square().mean() for o in outs).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert param.grad.abs().sum() > 0, name
        assert torch.isfinite(param.grad).all(), name


# --- freezing, frozen BN, checkpointing --------------------------------------

@pytest.mark.parametrize('frozen_stages', [0, 2, 4])
def test_frozen_stages(frozen_stages):
    model = PResNet(18, out_indices=(0, 1, 2, 3),
                    frozen_stages=frozen_stages)
    model.train()
    frozen = [model.conv1, *model.res_layers[:frozen_stages]]
    live = list(model.res_layers[frozen_stages:])
    before = {id(m): m.running_mean.clone() for f in frozen
              for m in f.modules() if isinstance(m, nn.BatchNorm2d)}
    trainable = [o for o in model(torch.randn(2, 3, 64, 64))
                 if o.requires_grad]
    assert len(trainable) == len(live)
    if trainable:
        sum(o.sum() for o in trainable).backward()
    for part in frozen:
        for m in part.modules():
            assert not m.training
            if isinstance(m, nn.BatchNorm2d):
                assert torch.equal(m.running_mean, before[id(m)])
        for p in part.parameters():
            assert not p.requires_grad and p.grad is None
    for part in live:
        assert all(m.training for m in part.modules())
        assert all(p.requires_grad and p.grad is not None
                   for p in part.parameters())


def test_norm_eval_keeps_every_bn_in_eval():
    model = PResNet(18, norm_eval=True).train()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 23
    assert not any(m.training for m in bns)
    assert model.res_layers[0].blocks[0].branch2a.conv.training
    mean = bns[0].running_mean.clone()
    model(torch.randn(2, 3, 32, 32))
    assert torch.equal(bns[0].running_mean, mean)


def test_frozen_batch_norm_by_hand():
    bn = FrozenBatchNorm2d(1)
    bn.weight.fill_(2.0)
    bn.bias.fill_(1.0)
    bn.running_mean.fill_(3.0)
    bn.running_var.fill_(4.0)
    out = bn(torch.full((1, 1, 1, 1), 5.0))
    torch.testing.assert_close(out.flatten(),
                               torch.tensor([2.0 / (4 + 1e-5)**0.5 * 2 + 1]))


def test_freeze_norm():
    torch.manual_seed(0)
    plain = PResNet(18).eval()
    randomize_norms(plain)
    model = PResNet(18, freeze_norm=True)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert sum(isinstance(m, FrozenBatchNorm2d)
               for m in model.modules()) == 23
    # BN affine values become buffers: only the convs stay parameters.
    bn_params = 2 * sum(m.num_features for m in plain.modules()
                        if isinstance(m, nn.BatchNorm2d))
    assert n_params(model) == 11_199_968 - bn_params
    # A file written with trainable BN loads (its counters are dropped) and
    # the result computes eval-mode BN, in train mode too.
    model.load_state_dict(plain.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expect = plain(x)
        for out, ref in zip(model.train()(x), expect):
            torch.testing.assert_close(out, ref)
    assert not any('num_batches_tracked' in k for k in model.state_dict())


def test_with_cp_gives_equal_outputs_and_gradients():
    torch.manual_seed(0)
    models = [PResNet(18, out_indices=(0, 1, 2, 3), with_cp=cp).train()
              for cp in (False, True)]
    models[1].load_state_dict(models[0].state_dict())
    x = torch.randn(2, 3, 64, 64)
    outs = []
    for model in models:
        out = model(x)
        sum(o.square().mean() for o in out).backward()
        outs.append(out)
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b)
    grads = [dict((n, p.grad) for n, p in m.named_parameters())
             for m in models]
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name],
                                   msg=name)


# --- arguments, loading, registration -------------------------------------

def test_bad_arguments_name_the_valid_values():
    with pytest.raises(KeyError, match=r'\[18, 34, 50, 101\]'):
        PResNet(depth=20)
    with pytest.raises(KeyError, match=r"\['a', 'b', 'c', 'd'\]"):
        PResNet(18, variant='e')
    for bad in [(4, ), (1, 5), (), (-5, )]:
        with pytest.raises(ValueError, match=r'0\.\.3'):
            PResNet(18, out_indices=bad)
    with pytest.raises(ValueError, match=r'-1\.\.4'):
        PResNet(18, frozen_stages=5)


def test_pretrained_init_cfg_loads_an_official_layout_file(tmp_path):
    torch.manual_seed(0)
    source = PResNet(18)
    randomize_norms(source)
    path = tmp_path / 'presnet18.pth'
    torch.save(source.state_dict(), path)  # a bare state dict, as theirs
    for freeze_norm in (False, True):
        model = PResNet(18, freeze_norm=freeze_norm, init_cfg=dict(
            type='Pretrained', checkpoint=str(path)))
        model.init_weights()
        state = model.state_dict()
        for key, value in state.items():
            torch.testing.assert_close(value, source.state_dict()[key])


def test_mmdet_builds_it_after_import():
    import mmsparx  # noqa: F401
    from mmdet.registry import MODELS
    model = MODELS.build(dict(type='PResNet', depth=18))
    assert isinstance(model, PResNet)
    assert model.out_indices == (1, 2, 3)
    assert model.out_channels == [128, 256, 512]


@pytest.mark.parametrize('arch,channels', [('xt', (64, 96, 192)),
                                           ('t', (64, 128, 256))])
def test_spartan_as_rtdetr_backbone(arch, channels):
    model = SpaRTAN(arch=arch, out_indices=(1, 2, 3), out_norm=None).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [
        (1, c, 64 // s, 64 // s) for c, s in zip(channels, (8, 16, 32))]
