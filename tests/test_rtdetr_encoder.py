"""RT-DETR hybrid encoder: parameter counts, shapes, the sin-cos position
embedding, AIFI / CSPRepLayer / RepVGG against hand computations, CCFM
wiring, gradients, registry build."""
import math

import pytest
import torch
import torch.nn.functional as F

from mmsparx.models.layers.transformer.aifi import (
    AIFI, AIFILayer, sincos_position_embedding_2d)
from mmsparx.models.layers.activations import build_activation
from mmsparx.models.layers.conv_norm import ConvNormAct
from mmsparx.models.layers.csp_rep_layer import CSPRepLayer, RepVGGBlock
from mmsparx.models.necks.hybrid_encoder import HybridEncoder

R18 = dict(in_channels=(128, 256, 512), expansion=0.5)
R50 = dict(in_channels=(512, 1024, 2048), expansion=1.0)


def count(module):
    return sum(p.numel() for p in module.parameters())


def randomise_bn(module, gen):
    """Non-trivial BN affine parameters and running statistics."""
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=gen) + 0.5
            m.bias.data = torch.randn(n, generator=gen) * 0.1
            m.running_mean = torch.randn(n, generator=gen) * 0.1
            m.running_var = torch.rand(n, generator=gen) + 0.5


# ---------------------------------------------------------------- counts

def conv_bn(cin, cout, k):
    return cin * cout * k * k + 2 * cout


def csp(cin, cout, blocks, expansion):
    h = int(cout * expansion)
    rep = conv_bn(h, h, 3) + conv_bn(h, h, 1)
    conv3 = conv_bn(h, cout, 1) if h != cout else 0
    return 2 * conv_bn(cin, h, 1) + blocks * rep + conv3


def aifi(d=256, ffn=1024):
    attn = (3 * d * d + 3 * d) + (d * d + d)
    return attn + (d * ffn + ffn) + (ffn * d + d) + 2 * 2 * d


@pytest.mark.parametrize('cfg,expected', [(R18, 4_965_120),
                                          (R50, 11_950_848)])
def test_parameter_counts(cfg, expected):
    enc = HybridEncoder(**cfg)
    d = 256
    proj = sum(c * d + 2 * d for c in cfg['in_channels'])
    ccfm = 2 * conv_bn(d, d, 1) + 2 * conv_bn(d, d, 3) \
        + 4 * csp(2 * d, d, 3, cfg['expansion'])
    assert aifi() == 789_760 == count(enc.encoder)
    assert proj == count(enc.input_proj)
    assert proj + aifi() + ccfm == expected == count(enc)
    # The spec's rounded figures: 4.965 M (R18/R34), AIFI 0.790 M, and
    # about 11.0 M without input projections for the R50-size encoder.
    if cfg is R18:
        assert proj == 230_912 and ccfm == 3_944_448
    else:
        assert proj == 919_040 and expected - proj == 11_031_808


def test_depth_mult_and_layers_change_counts():
    base = HybridEncoder(**R18)
    half = HybridEncoder(**R18, depth_mult=0.5)  # round(1.5) = 2 blocks
    two = HybridEncoder(**R18, num_encoder_layers=2)
    h = 128
    assert len(half.fpn_blocks[0].bottlenecks) == 2
    assert count(base) - count(half) == 4 * (conv_bn(h, h, 3)
                                             + conv_bn(h, h, 1))
    assert count(two) - count(base) == aifi()


# ---------------------------------------------------------------- shapes

@pytest.mark.parametrize('img_hw', [(64, 64), (64, 96), (100, 100)])
def test_output_shapes(img_hw):
    torch.manual_seed(0)
    enc = HybridEncoder(**R18).eval()
    # Backbone maps round strides up (odd 100 -> 13, 7, 4); the top-down
    # path then resizes onto the lower grid instead of doubling.
    sizes = [(math.ceil(img_hw[0] / s), math.ceil(img_hw[1] / s))
             for s in (8, 16, 32)]
    feats = [torch.randn(1, c, *hw) for c, hw in zip(R18['in_channels'],
                                                     sizes)]
    with torch.no_grad():
        outs = enc(feats)
    assert isinstance(outs, tuple) and len(outs) == 3
    assert [tuple(o.shape) for o in outs] == [(1, 256, *hw) for hw in sizes]
    if img_hw == (64, 96):
        assert sizes == [(8, 12), (4, 6), (2, 3)]
    assert enc.out_channels == [256] * 3 and enc.out_strides == [8, 16, 32]
    assert all(torch.isfinite(o).all() for o in outs)


# ---------------------------------------------- position embedding

def test_position_embedding_by_hand():
    pe = sincos_position_embedding_2d(4, 5, embed_dim=8)
    assert pe.shape == (1, 20, 8) and pe.dtype == torch.float32
    # Token (0, 0): sin parts 0, cos parts 1.
    assert pe[0, 0].tolist() == [0., 0., 1., 1., 0., 0., 1., 1.]
    # omega = 10000 ** (-i / 2) for i in (0, 1) = (1, 0.01).
    y, x = 2, 3
    want = [math.sin(y), math.sin(0.01 * y), math.cos(y), math.cos(0.01 * y),
            math.sin(x), math.sin(0.01 * x), math.cos(x), math.cos(0.01 * x)]
    torch.testing.assert_close(pe[0, y * 5 + x],
                               torch.tensor(want, dtype=torch.float32))
    # The frequency formula at full width: channel i of the sin-y block is
    # sin(y * 10000 ** (-i / 64)).
    pe = sincos_position_embedding_2d(3, 3, embed_dim=256)
    for i in (0, 1, 17, 63):
        omega = 10000 ** (-i / 64)
        assert pe[0, 3 * 2 + 1, i].item() == pytest.approx(
            math.sin(2 * omega), abs=1e-6)
        assert pe[0, 3 * 2 + 1, 64 + i].item() == pytest.approx(
            math.cos(2 * omega), abs=1e-6)
        assert pe[0, 3 * 2 + 1, 128 + i].item() == pytest.approx(
            math.sin(1 * omega), abs=1e-6)
    with pytest.raises(ValueError, match='divisible by 4'):
        sincos_position_embedding_2d(2, 2, embed_dim=6)


def official_order(w, h, embed_dim, temperature=10000.):
    """The official construction order: a meshgrid over (w, h) with 'ij'
    indexing, flattened w-major; [sin w, cos w, sin h, cos h]."""
    d = embed_dim // 4
    omega = 1. / temperature**(torch.arange(d, dtype=torch.float32) / d)
    gw, gh = torch.meshgrid(torch.arange(w, dtype=torch.float32),
                            torch.arange(h, dtype=torch.float32),
                            indexing='ij')
    ow = gw.flatten()[:, None] * omega[None]
    oh = gh.flatten()[:, None] * omega[None]
    return torch.cat([ow.sin(), ow.cos(), oh.sin(), oh.cos()], 1)[None]


@pytest.mark.parametrize('n', [1, 4, 20])
def test_position_embedding_square_equals_official(n):
    assert torch.equal(sincos_position_embedding_2d(n, n, 256),
                       official_order(n, n, 256))


def test_position_embedding_non_square_each_token_own_xy():
    h, w = 3, 5
    pe = sincos_position_embedding_2d(h, w, 16)[0]
    for y in range(h):
        for x in range(w):
            # The square-map embedding of the same (y, x) (first half from
            # the row, second half from the column).
            ref = sincos_position_embedding_2d(w, w, 16)[0, y * w + x]
            assert torch.equal(pe[y * w + x], ref)
            assert torch.equal(pe[y * w + x, :8], pe[y * w, :8])
            assert torch.equal(pe[y * w + x, 8:], pe[x, 8:])
    # The official w-major order gives token (0, 3) the embedding of
    # (row 1, column 0) here: the mix-up this layout fixes.
    off = official_order(w, h, 16)[0]
    assert not torch.equal(pe, off)
    assert torch.equal(off[3], sincos_position_embedding_2d(5, 5, 16)[0, 5])


# ---------------------------------------------------------------- AIFI

def layer_norm(x, ln):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu)**2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias


def hand_aifi_layer(layer, src, pos, heads):
    b, n, c = src.shape
    dh = c // heads
    wq, wk, wv = layer.self_attn.in_proj_weight.chunk(3)
    bq, bk, bv = layer.self_attn.in_proj_bias.chunk(3)
    qk_in = src + pos
    q = (qk_in @ wq.T + bq).reshape(b, n, heads, dh).transpose(1, 2)
    k = (qk_in @ wk.T + bk).reshape(b, n, heads, dh).transpose(1, 2)
    v = (src @ wv.T + bv).reshape(b, n, heads, dh).transpose(1, 2)
    att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dh), -1)
    o = (att @ v).transpose(1, 2).reshape(b, n, c)
    o = o @ layer.self_attn.out_proj.weight.T + layer.self_attn.out_proj.bias
    x = layer_norm(src + o, layer.norm1)
    hid = x @ layer.linear1.weight.T + layer.linear1.bias
    hid = 0.5 * hid * (1 + torch.erf(hid / math.sqrt(2)))  # exact GELU
    f = hid @ layer.linear2.weight.T + layer.linear2.bias
    return layer_norm(x + f, layer.norm2)


def test_aifi_layer_equals_hand_post_norm():
    torch.manual_seed(1)
    layer = AIFILayer(8, num_heads=2, ffn_dim=16).double().eval()
    for p in (layer.norm1.weight, layer.norm2.bias, layer.linear1.bias):
        p.data.normal_()
    src = torch.randn(2, 6, 8, dtype=torch.float64)
    pos = torch.randn(1, 6, 8, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(layer(src, pos),
                                   hand_aifi_layer(layer, src, pos, 2))
        # The position changes queries and keys only: with pos = 0 it is
        # plain self-attention, and it does change the result.
        torch.testing.assert_close(
            layer(src), hand_aifi_layer(layer, src, torch.zeros_like(pos), 2))
        assert not torch.allclose(layer(src), layer(src, pos))


def test_aifi_map_uses_row_major_tokens_and_its_embedding():
    torch.manual_seed(2)
    aifi_mod = AIFI(8, num_heads=2, ffn_dim=16, num_layers=2).double().eval()
    x = torch.randn(2, 8, 3, 4, dtype=torch.float64)
    pos = sincos_position_embedding_2d(3, 4, 8).double()
    tokens = x.permute(0, 2, 3, 1).reshape(2, 12, 8)  # token y * 4 + x
    for layer in aifi_mod.layers:
        tokens = hand_aifi_layer(layer, tokens, pos, 2)
    with torch.no_grad():
        torch.testing.assert_close(
            aifi_mod(x), tokens.reshape(2, 3, 4, 8).permute(0, 3, 1, 2))
    # Independent initialisation per layer (not deep copies of one).
    w0, w1 = (layer.linear1.weight for layer in aifi_mod.layers)
    assert not torch.equal(w0, w1)


# ---------------------------------------------------- CSP / RepVGG

def hand_conv_bn(m, x, act):
    y = F.conv2d(x, m.conv.weight, None, m.conv.stride, m.conv.padding)
    bn = m.norm
    y = (y - bn.running_mean[:, None, None]) / torch.sqrt(
        bn.running_var[:, None, None] + bn.eps)
    y = y * bn.weight[:, None, None] + bn.bias[:, None, None]
    return y * torch.sigmoid(y) if act else y


def hand_repvgg(block, x):
    y = hand_conv_bn(block.conv1, x, False) + hand_conv_bn(block.conv2, x,
                                                           False)
    return y * torch.sigmoid(y)


@pytest.mark.parametrize('expansion', [0.5, 1.0])
def test_csp_rep_layer_equals_hand_composition(expansion):
    gen = torch.Generator().manual_seed(3)
    layer = CSPRepLayer(12, 8, num_blocks=2, expansion=expansion).double()
    randomise_bn(layer, gen)
    layer.double().eval()
    x = torch.randn(2, 12, 5, 6, generator=gen, dtype=torch.float64)
    b = hand_conv_bn(layer.conv1, x, True)
    for block in layer.bottlenecks:
        b = hand_repvgg(block, b)
    y = b + hand_conv_bn(layer.conv2, x, True)  # summed, not concatenated
    if expansion == 0.5:
        assert layer.conv1.conv.out_channels == 4
        y = hand_conv_bn(layer.conv3, y, True)
    else:
        assert isinstance(layer.conv3, torch.nn.Identity)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), y)


def test_repvgg_deploy_fusion_equal_in_eval():
    gen = torch.Generator().manual_seed(4)
    block = RepVGGBlock(6, 5, act='silu')
    randomise_bn(block, gen)
    block.double().eval()
    x = torch.randn(2, 6, 7, 5, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        before = block(x)
        torch.testing.assert_close(before, hand_repvgg(block, x))
        block.switch_to_deploy()
        after = block(x)
    torch.testing.assert_close(after, before, rtol=1e-10, atol=1e-10)
    assert sorted(block.state_dict()) == ['conv.bias', 'conv.weight']
    assert block.conv.weight.shape == (5, 6, 3, 3)
    block.switch_to_deploy()  # idempotent
    assert block.deploy


def test_conv_norm_brick():
    m = ConvNormAct(4, 6, 3, stride=2, act='relu')
    assert m.conv.bias is None and m.conv.padding == (1, 1)
    assert sorted(m.state_dict()) == [
        'conv.weight', 'norm.bias', 'norm.num_batches_tracked',
        'norm.running_mean', 'norm.running_var', 'norm.weight']
    assert m(torch.randn(1, 4, 7, 7)).shape == (1, 6, 4, 4)
    assert isinstance(build_activation('SiLU'), torch.nn.SiLU)
    assert isinstance(build_activation(None), torch.nn.Identity)
    with pytest.raises(ValueError, match='act must be'):
        build_activation('swish')


# ----------------------------------------------------- whole encoder

def test_ccfm_wiring_equals_explicit_three_levels():
    """Top-down from the top level, the lateral conv's output reused by
    the bottom-up pass; concat order [upsampled, lower] / [down, higher]."""
    torch.manual_seed(5)
    enc = HybridEncoder(in_channels=(8, 12, 16), hidden_dim=16, num_heads=2,
                        ffn_dim=32, expansion=0.5)
    randomise_bn(enc, torch.Generator().manual_seed(6))
    enc.eval()
    feats = [torch.randn(2, 8, 8, 12), torch.randn(2, 12, 4, 6),
             torch.randn(2, 16, 2, 3)]

    def up(t):
        return F.interpolate(t, scale_factor=2., mode='nearest')

    with torch.no_grad():
        p3, p4, p5 = (m(f) for m, f in zip(enc.input_proj, feats))
        p5 = enc.encoder[0](p5)
        h5 = enc.lateral_convs[0](p5)
        i4 = enc.fpn_blocks[0](torch.cat([up(h5), p4], 1))
        h4 = enc.lateral_convs[1](i4)
        i3 = enc.fpn_blocks[1](torch.cat([up(h4), p3], 1))
        n4 = enc.pan_blocks[0](torch.cat([enc.downsample_convs[0](i3), h4],
                                         1))
        n5 = enc.pan_blocks[1](torch.cat([enc.downsample_convs[1](n4), h5],
                                         1))
        outs = enc(feats)
    for got, want in zip(outs, (i3, n4, n5)):
        torch.testing.assert_close(got, want)


def test_no_encoder_layers_skips_aifi():
    torch.manual_seed(7)
    enc = HybridEncoder(in_channels=(8, 8, 8), hidden_dim=16, num_heads=2,
                        ffn_dim=32, num_encoder_layers=0).eval()
    assert count(enc.encoder) == 0
    feats = [torch.randn(1, 8, 4, 4), torch.randn(1, 8, 2, 2),
             torch.randn(1, 8, 1, 1)]
    with torch.no_grad():
        assert [o.shape[-1] for o in enc(feats)] == [4, 2, 1]


def test_gradients_reach_every_parameter():
    torch.manual_seed(8)
    enc = HybridEncoder(**R18).train()
    feats = [torch.randn(2, c, s, s) for c, s in zip(R18['in_channels'],
                                                     (8, 4, 2))]
    sum(o.square().mean() for o in enc(feats)).backward()
    missing = [n for n, p in enc.named_parameters()
               if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_pytorch_default_init_kept():
    """Convs keep Kaiming-uniform(a=sqrt(5)): |w| <= 1/sqrt(fan_in), and
    mmengine's init_weights() (no init_cfg) leaves them untouched."""
    torch.manual_seed(9)
    enc = HybridEncoder(**R18)
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    enc.init_weights()
    assert all(torch.equal(v, before[k]) for k, v in enc.state_dict().items())
    for name, m in enc.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            fan_in = m.weight[0].numel()
            bound = 1 / math.sqrt(fan_in)
            assert m.weight.abs().max() <= bound, name
            # Uniform on [-b, b] has std b / sqrt(3); normal(0, sqrt(2 /
            # fan_in)) from mmcv's Kaiming init would be ~2.4x larger.
            assert m.weight.std().item() == pytest.approx(
                bound / math.sqrt(3), rel=0.1), name


def test_state_dict_keys_follow_official_names():
    keys = HybridEncoder(**R18).state_dict().keys()
    for key in ('input_proj.0.0.weight', 'input_proj.2.1.running_var',
                'encoder.0.layers.0.self_attn.in_proj_weight',
                'encoder.0.layers.0.self_attn.out_proj.bias',
                'encoder.0.layers.0.linear1.weight',
                'encoder.0.layers.0.norm2.bias',
                'lateral_convs.1.conv.weight', 'lateral_convs.1.norm.bias',
                'fpn_blocks.0.conv1.conv.weight',
                'fpn_blocks.0.bottlenecks.2.conv2.norm.weight',
                'fpn_blocks.1.conv3.conv.weight',
                'downsample_convs.0.conv.weight',
                'pan_blocks.1.bottlenecks.0.conv1.conv.weight'):
        assert key in keys, key
    assert not any('pos' in k for k in keys)
    assert len(keys) == 270


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match='feat_strides'):
        HybridEncoder(in_channels=(8, 8), feat_strides=(8, 16, 32))
    with pytest.raises(ValueError, match='use_encoder_idx'):
        HybridEncoder(**R18, use_encoder_idx=(3, ))
    enc = HybridEncoder(in_channels=(8, 8, 8), hidden_dim=16, num_heads=2)
    with pytest.raises(ValueError, match='expected 3 levels'):
        enc([torch.randn(1, 8, 4, 4)])


def test_build_through_mmdet_registry():
    import mmsparx  # noqa: F401  registers the lazy RT-DETR modules
    from mmdet.registry import MODELS
    enc = MODELS.build(dict(type='HybridEncoder', in_channels=[128, 256, 512],
                            expansion=0.5))
    assert isinstance(enc, HybridEncoder)
    assert enc.in_channels == (128, 256, 512)
    assert count(enc) == 4_965_120


def test_official_state_dict_loads_and_square_maps_match():
    """The test-only rebuild of the official encoder (tests/
    rtdetr_reference.py): its state dict loads strictly and gives the same
    outputs on square maps; non-square maps differ (the official w-major
    embedding scrambles tokens there; ours does not)."""
    ref_mod = pytest.importorskip('rtdetr_reference')
    torch.manual_seed(10)
    ref = ref_mod.HybridEncoder(in_channels=(128, 256, 512), expansion=0.5)
    randomise_bn(ref, torch.Generator().manual_seed(11))
    ref.eval()
    enc = HybridEncoder(**R18).eval()
    enc.load_state_dict(ref.state_dict(), strict=True)
    with torch.no_grad():
        sq = [torch.randn(1, c, s, s) for c, s in zip(R18['in_channels'],
                                                      (8, 4, 2))]
        for got, want in zip(enc(sq), ref(sq)):
            torch.testing.assert_close(got, want)
        ns = [torch.randn(1, c, s, 3 * s // 2)
              for c, s in zip(R18['in_channels'], (8, 4, 2))]
        assert not torch.allclose(enc(ns)[2], ref(ns)[2])
