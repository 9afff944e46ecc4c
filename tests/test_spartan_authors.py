"""SpaRTAN against the authors' public model code, numerically.

The reference below is the authors' forward pass (github.com/henry-pay/
SpaRTAN, ``src/model/spartan.py`` at commit 60d8b1e7, the module behind the
paper's shipped config ``src/config/model/spartan.yaml``), rewritten here
as plain functions over a state dict in the AUTHORS' key layout:
``conv.{0,1}`` (stem), one flat ``layers.{k}`` with blocks and 2x2
downsamples interleaved, ``linear``. Their facts, as read there:

* ConvNormAct = conv (no bias) -> BatchNorm(eps 1e-6) -> act, act GELU by
  default (both stem convs), SiLU in the 2x2/s2 downsamples;
* Block: ``x + scale_1 * SMixer(GN(x))`` then ``x + scale_2 * CMixer(GN(x))``
  with GroupNorm(1 group, eps 1e-6);
* SMixer: 1x1 C -> C/2, ``x + gamma * (x - GAP(x))``; high: 3x3 ConvBN-GELU,
  SE; low: bare 3x3 dil-2 conv, 3x3 dil-2 ConvBN-GELU, SE; concat, 1x1;
  groups 1 in stages 1-2 (``layer < num_layer // 2``), C/2 in stages 3-4;
* CMixer: argmax of the input over channels, ``w * gelu(theta) + w_max *
  theta_max``, adjacent channel pairs (2k, 2k+1) as complex numbers times
  ``complex`` in float32, 3x3 ConvBN-GELU (groups n in stages 1-2, C in
  3-4), SE(n -> C/4), 1x1 n -> C;
* head: global average pool, linear (no final norm).

Every tensor is random (BN statistics, gammas, layer scales of order 0.1-1)
so every branch shows in the output; the dict is converted with
``convert_spartan``, loaded strictly into mmsparx's backbone and compared
in float32 to 1e-4 absolute (logits and the four stage maps).
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from conftest import official_shapes
from mmsparx.fileio import load_state_dict
from mmsparx.converters.spartan import convert_spartan, infer_arch
from mmsparx.models.backbones import SpaRTAN

ATOL = 1e-4
BN_EPS = GN_EPS = 1e-6
StateDict = Dict[str, Tensor]
Arch = Tuple[Sequence[int], Sequence[int], Sequence[int]]  # C, depths, e

SMALL: Arch = ((16, 32, 48, 64), (1, 2, 2, 1), (4, 4, 2, 2))
XT: Arch = ((32, 64, 96, 192), (3, 3, 10, 2), (4, 4, 2, 2))
T: Arch = ((32, 64, 128, 256), (3, 3, 12, 2), (4, 4, 2, 2))
# Weights of the small model: with this draw every tensor moves the output
# by > 10 * ATOL when perturbed (test_every_tensor_is_used_the_same_way).
SEED = 3


# --------------------------------------------------------------------------
# The authors' state-dict layout, from their constructor
# --------------------------------------------------------------------------

def authors_shapes(arch: Arch, num_classes: int = 1000
                   ) -> Dict[str, Tuple[int, ...]]:
    """key -> shape of the authors' ``SpaRTAN`` for ``arch`` (hybrid convs,
    as their code hard-wires: full in stages 1-2, grouped in 3-4)."""
    channels, depths, ratios = arch
    shapes: Dict[str, Tuple[int, ...]] = {}

    def conv_norm(prefix: str, out: int, in_per_group: int, k: int,
                  norm: bool = True) -> None:
        shapes[f'{prefix}conv.weight'] = (out, in_per_group, k, k)
        if norm:
            for name in ('weight', 'bias', 'running_mean', 'running_var'):
                shapes[f'{prefix}norm.{name}'] = (out, )
            shapes[f'{prefix}norm.num_batches_tracked'] = ()

    def conv1x1(prefix: str, out: int, inp: int) -> None:
        shapes[f'{prefix}weight'] = (out, inp, 1, 1)
        shapes[f'{prefix}bias'] = (out, )

    def se(prefix: str, dim: int, squeezed: int) -> None:
        conv1x1(f'{prefix}squeeze.', squeezed, dim)
        conv1x1(f'{prefix}expand.', dim, squeezed)

    conv_norm('conv.0.', channels[0] // 2, 3, 3)
    conv_norm('conv.1.', channels[0], channels[0] // 2, 3)
    k = 0
    for stage, (dim, depth, ratio) in enumerate(zip(channels, depths,
                                                    ratios)):
        if stage:
            conv_norm(f'layers.{k}.', dim, channels[stage - 1], 2)
            k += 1
        grouped = stage >= 2
        inner, hidden = dim // 2, dim * ratio
        for _ in range(depth):
            p = f'layers.{k}.'
            shapes[p + 'scale_1'] = shapes[p + 'scale_2'] = (1, dim, 1, 1)
            shapes[p + 'smixer.gamma'] = (1, inner, 1, 1)
            conv1x1(p + 'smixer.proj_in.', inner, dim)
            per_group = 1 if grouped else inner
            conv_norm(p + 'smixer.h_conv.', inner, per_group, 3)
            conv_norm(p + 'smixer.l_conv.0.', inner, per_group, 3, False)
            conv_norm(p + 'smixer.l_conv.1.', inner, per_group, 3)
            se(p + 'smixer.h_attn.', inner, inner // 4)
            se(p + 'smixer.l_attn.', inner, inner // 4)
            conv1x1(p + 'smixer.proj_out.', dim, dim)
            shapes[p + 'cmixer.complex'] = (1, 1, 1, hidden // 2, 2)
            conv1x1(p + 'cmixer.theta.', hidden, dim)
            conv1x1(p + 'cmixer.proj.', hidden, dim)
            conv_norm(p + 'cmixer.conv.', hidden,
                      hidden // dim if grouped else 1, 3)
            se(p + 'cmixer.attn.', hidden, dim // 4)
            conv1x1(p + 'cmixer.proj_out.', dim, hidden)
            for norm in ('norm_1', 'norm_2'):
                shapes[f'{p}{norm}.weight'] = shapes[f'{p}{norm}.bias'] = \
                    (dim, )
            k += 1
    shapes['linear.weight'] = (num_classes, channels[3])
    shapes['linear.bias'] = (num_classes, )
    return shapes


def random_tensor(key: str, shape: Tuple[int, ...],
                  g: torch.Generator) -> Tensor:
    """A value for ``key`` that keeps activations O(1) yet lets every
    tensor matter: BN/GN affine ~U(0.5, 1.5), biases and running means
    ~0.1-0.2 N(0, 1), running_var ~U(0.5, 1.5), gammas and layer scales
    +-U(0.1, 1), complex weights N(0, 1) (their init), conv/linear weights
    N(0, 1/fan_in); SE squeeze biases U(0, 0.6), else with C/8 squeezed
    channels all may be below ReLU's zero and the SE a constant."""
    if key.endswith('num_batches_tracked'):
        return torch.tensor(7)
    if key.endswith('running_var') or (
            key.endswith('.weight') and len(shape) == 1):
        return 0.5 + torch.rand(shape, generator=g)
    if key.endswith('running_mean'):
        return 0.2 * torch.randn(shape, generator=g)
    if key.endswith(('scale_1', 'scale_2', 'gamma')):
        sign = torch.randint(0, 2, shape, generator=g) * 2 - 1
        return sign * (0.1 + 0.9 * torch.rand(shape, generator=g))
    if key.endswith('complex'):
        return torch.randn(shape, generator=g)
    if key.endswith('squeeze.bias'):  # SE: few squeezed channels, keep
        return 0.6 * torch.rand(shape, generator=g)  # some of them alive
    if key.endswith('bias'):
        return 0.1 * torch.randn(shape, generator=g)
    fan_in = math.prod(shape[1:])
    return torch.randn(shape, generator=g) / math.sqrt(fan_in)


def random_authors_state_dict(arch: Arch, num_classes: int = 1000,
                              seed: int = 0) -> StateDict:
    g = torch.Generator().manual_seed(seed)
    return {key: random_tensor(key, shape, g)
            for key, shape in authors_shapes(arch, num_classes).items()}


# --------------------------------------------------------------------------
# The authors' forward pass, over their keys
# --------------------------------------------------------------------------

def conv_norm_act(x: Tensor, sd: StateDict, p: str, *, stride: int = 1,
                  padding: int = 0, dilation: int = 1, groups: int = 1,
                  norm: bool = True,
                  act: Optional[Callable[[Tensor], Tensor]] = F.gelu
                  ) -> Tensor:
    x = F.conv2d(x, sd[p + 'conv.weight'], None, stride, padding, dilation,
                 groups)
    if norm:
        x = F.batch_norm(x, sd[p + 'norm.running_mean'],
                         sd[p + 'norm.running_var'], sd[p + 'norm.weight'],
                         sd[p + 'norm.bias'], False, 0.0, BN_EPS)
    return act(x) if act is not None else x


def conv1x1(x: Tensor, sd: StateDict, p: str) -> Tensor:
    return F.conv2d(x, sd[p + 'weight'], sd[p + 'bias'])


def squeeze_excite(x: Tensor, sd: StateDict, p: str) -> Tensor:
    gate = F.relu(conv1x1(x.mean((2, 3), keepdim=True), sd, p + 'squeeze.'))
    return x * torch.sigmoid(conv1x1(gate, sd, p + 'expand.'))


def smixer(x: Tensor, sd: StateDict, p: str, grouped: bool) -> Tensor:
    x = conv1x1(x, sd, p + 'proj_in.')
    x = x + sd[p + 'gamma'] * (x - x.mean((2, 3), keepdim=True))
    groups = x.shape[1] if grouped else 1
    high = conv_norm_act(x, sd, p + 'h_conv.', padding=1, groups=groups)
    low = conv_norm_act(x, sd, p + 'l_conv.0.', padding=2, dilation=2,
                        groups=groups, norm=False, act=None)
    low = conv_norm_act(low, sd, p + 'l_conv.1.', padding=2, dilation=2,
                        groups=groups)
    both = torch.cat((squeeze_excite(high, sd, p + 'h_attn.'),
                      squeeze_excite(low, sd, p + 'l_attn.')), dim=1)
    return conv1x1(both, sd, p + 'proj_out.')


def complex_times(feat: Tensor, weight: Tensor) -> Tensor:
    """(B, n, H, W) as n/2 complex channels (2k real, 2k+1 imaginary) times
    ``weight`` (..., n/2, 2), in float32."""
    b, n, h, w = feat.shape
    pairs = feat.float().reshape(b, n // 2, 2, h, w)
    re, im = pairs[:, :, 0], pairs[:, :, 1]
    w_re, w_im = (t.reshape(1, n // 2, 1, 1)
                  for t in weight.float().reshape(n // 2, 2).unbind(1))
    out = torch.stack((re * w_re - im * w_im, re * w_im + im * w_re), dim=2)
    return out.reshape(b, n, h, w)


def cmixer(x: Tensor, sd: StateDict, p: str, grouped: bool) -> Tensor:
    dim, hidden = x.shape[1], sd[p + 'theta.weight'].shape[0]
    where = x.argmax(dim=1, keepdim=True)
    phase = F.gelu(conv1x1(x, sd, p + 'theta.'))
    amp = conv1x1(x, sd, p + 'proj.')
    feat = amp * phase + amp.gather(1, where) * phase.gather(1, where)
    feat = complex_times(feat, sd[p + 'complex'])
    feat = conv_norm_act(feat, sd, p + 'conv.', padding=1,
                         groups=dim if grouped else hidden)
    return conv1x1(squeeze_excite(feat, sd, p + 'attn.'), sd,
                   p + 'proj_out.')


def block(x: Tensor, sd: StateDict, p: str, grouped: bool) -> Tensor:
    def gn(t: Tensor, name: str) -> Tensor:
        return F.group_norm(t, 1, sd[f'{p}{name}.weight'],
                            sd[f'{p}{name}.bias'], GN_EPS)

    x = x + sd[p + 'scale_1'] * smixer(gn(x, 'norm_1'), sd, p + 'smixer.',
                                       grouped)
    return x + sd[p + 'scale_2'] * cmixer(gn(x, 'norm_2'), sd,
                                          p + 'cmixer.', grouped)


def authors_forward(sd: StateDict, image: Tensor
                    ) -> Tuple[Tensor, List[Tensor]]:
    """(logits, [map after each of the 4 stages]) of the authors' model
    whose weights are ``sd``."""
    x = conv_norm_act(image, sd, 'conv.0.', stride=2, padding=1)
    x = conv_norm_act(x, sd, 'conv.1.', stride=2, padding=1)
    maps, stage, k = [], 0, 0
    while f'layers.{k}.conv.weight' in sd or f'layers.{k}.scale_1' in sd:
        p = f'layers.{k}.'
        if p + 'conv.weight' in sd:  # a downsample ends the stage
            maps.append(x)
            stage += 1
            x = conv_norm_act(x, sd, p, stride=2, act=F.silu)
        else:  # num_layer = 4: grouped convs from stage 4 // 2 = 2 on
            x = block(x, sd, p, grouped=stage >= 2)
        k += 1
    maps.append(x)
    logits = F.linear(x.mean((2, 3)), sd['linear.weight'], sd['linear.bias'])
    return logits, maps


# --------------------------------------------------------------------------
# mmsparx, from the converted dict
# --------------------------------------------------------------------------

def mmsparx_arch(arch: Arch) -> dict:
    channels, depths, ratios = arch
    return dict(channels=channels, depths=depths, expand_ratios=ratios,
                conv_types=('F', 'F', 'D', 'D'))


def build_mmsparx(arch: Arch) -> SpaRTAN:
    """The backbone as a classifier uses it: no output norms, no drop
    path, every stage returned."""
    return SpaRTAN(mmsparx_arch(arch), out_indices=(0, 1, 2, 3),
                   drop_path_rate=0.0, out_norm=None).eval()


def load_authors(model: SpaRTAN, sd: StateDict) -> StateDict:
    """Convert ``sd``, load the backbone part strictly, return the head."""
    converted = convert_spartan(sd)
    backbone = {k[len('backbone.'):]: v for k, v in converted.items()
                if k.startswith('backbone.')}
    head = {k: v for k, v in converted.items()
            if not k.startswith('backbone.')}
    assert sorted(head) == ['head.fc.bias', 'head.fc.weight']
    assert load_state_dict(model, backbone, strict=True).ok
    return head


@torch.no_grad()
def mmsparx_forward(model: SpaRTAN, head: StateDict, image: Tensor
                    ) -> Tuple[Tensor, List[Tensor]]:
    """(logits, stage maps): the backbone, then GAP and the linear head
    (what mmpretrain's GlobalAveragePooling + LinearClsHead compute)."""
    maps = list(model(image))
    logits = F.linear(maps[-1].mean((2, 3)), head['head.fc.weight'],
                      head['head.fc.bias'])
    return logits, maps


def max_differences(got: Tuple[Tensor, List[Tensor]],
                    want: Tuple[Tensor, List[Tensor]]) -> List[float]:
    """Max abs difference of logits, then of each stage map."""
    pairs = [(got[0], want[0])] + list(zip(got[1], want[1]))
    for a, b in pairs:
        assert a.shape == b.shape, (a.shape, b.shape)
    return [(a - b).abs().max().item() for a, b in pairs]


def image(size: Tuple[int, int], batch: int = 2, seed: int = 1) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, *size, generator=g)


def compare(arch: Arch, size: Tuple[int, int], num_classes: int = 10,
            seed: int = SEED) -> List[float]:
    sd = random_authors_state_dict(arch, num_classes, seed)
    model = build_mmsparx(arch)
    head = load_authors(model, sd)
    x = image(size)
    with torch.no_grad():
        want = authors_forward(sd, x)
    return max_differences(mmsparx_forward(model, head, x), want)


# --------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------

@pytest.mark.parametrize('arch,name', [(XT, 'spartan_XT_tableI'),
                                       (T, 'spartan_T_shipped')])
def test_reference_layout_is_the_authors_key_list(arch, name):
    """The reference reads the layout the authors' models really have:
    every key and shape of the spec's key lists (so its hybrid group rule
    and interleaved ``layers.{k}`` are theirs)."""
    assert authors_shapes(arch) == official_shapes(name)


def test_converted_arch_is_the_authors_arch():
    """infer_arch reads back the hybrid arch the reference assumes."""
    sd = random_authors_state_dict(SMALL, 10)
    assert infer_arch(sd) == mmsparx_arch(SMALL)


def test_small_arch_matches_the_authors_function():
    """Custom widths 16-32-48-64, depths 1-2-2-1, e 4-4-2-2, F-F-D-D:
    logits and all four stage maps within 1e-4."""
    diffs = compare(SMALL, (64, 64))
    assert max(diffs) < ATOL, diffs


def test_non_square_even_sizes_match():
    """Any size whose maps stay even at every 2x2 downsample (the authors'
    code drops a row on odd maps; mmsparx pads, so odd maps are not
    compared)."""
    diffs = compare(SMALL, (64, 96), seed=SEED + 1)
    assert max(diffs) < ATOL, diffs


@pytest.mark.parametrize('arch', [XT, T], ids=['xt', 't'])
def test_real_variants_match_the_authors_function(arch):
    """The published XT / T layouts (1000 classes) at 64x64."""
    diffs = compare(arch, (64, 64), num_classes=1000, seed=5)
    assert max(diffs) < ATOL, diffs


def perturbed(sd: StateDict, key: str) -> StateDict:
    """``sd`` with ``key`` moved well past the tolerance (stays positive
    where it was)."""
    return dict(sd, **{key: sd[key] * 1.25 + 0.05})


def test_one_mixer_weight_changes_the_output():
    """The comparison has teeth: mmsparx loaded with one CMixer complex
    weight perturbed no longer matches the unperturbed authors' output."""
    sd = random_authors_state_dict(SMALL, 10, SEED)
    x = image((64, 64))
    with torch.no_grad():
        want = authors_forward(sd, x)
    model = build_mmsparx(SMALL)
    head = load_authors(model, perturbed(sd, 'layers.5.cmixer.complex'))
    assert max(max_differences(mmsparx_forward(model, head, x), want)) \
        > 100 * ATOL


def test_every_tensor_is_used_the_same_way():
    """Perturb each tensor of the small model in turn: mmsparx and the
    reference both move (so no weight is ignored by either, and the 1e-4
    match covers it) and still agree. Each perturbed dict is converted;
    what it converts differently is copied into the strictly loaded model
    (what a strict load of the whole converted dict would change)."""
    sd = random_authors_state_dict(SMALL, 10, SEED)
    x = image((64, 64), batch=1)
    model = build_mmsparx(SMALL)
    load_authors(model, sd)
    own = model.state_dict()  # the parameters' and buffers' storage
    base_converted = convert_spartan(sd)
    with torch.no_grad():
        base = authors_forward(sd, x)
    for key in sd:
        if key.endswith('num_batches_tracked'):
            continue
        moved = perturbed(sd, key)
        converted = convert_spartan(moved)
        assert sorted(converted) == sorted(base_converted), key
        changed = [k for k, v in converted.items()
                   if not torch.equal(v, base_converted[k])]
        assert changed, key
        head = {k: v for k, v in converted.items()
                if not k.startswith('backbone.')}
        copied = {k[len('backbone.'):]: converted[k] for k in changed
                  if k.startswith('backbone.')}
        with torch.no_grad():
            for name, value in copied.items():
                assert own[name].shape == value.shape, (key, name)
                own[name].copy_(value)
        got = mmsparx_forward(model, head, x)
        with torch.no_grad():
            want = authors_forward(moved, x)
            for name in copied:  # back to the unperturbed weights
                own[name].copy_(base_converted['backbone.' + name])
        assert max(max_differences(got, want)) < ATOL, key
        assert max(max_differences(got, base)) > 10 * ATOL, key


def test_classifier_path_matches():
    """Through mmpretrain's ImageClassifier (GAP neck, LinearClsHead) with
    the full converted dict, where mmpretrain is installed."""
    pytest.importorskip('mmpretrain')
    from mmsparx.models.variants import build_image_classifier
    sd = random_authors_state_dict(SMALL, 10)
    model = build_image_classifier(
        dict(type='SpaRTAN', arch=mmsparx_arch(SMALL), out_indices=(3, ),
             out_norm=None, drop_path_rate=0.0), SMALL[0][3], 10).eval()
    assert load_state_dict(model, convert_spartan(sd), strict=True).ok
    x = image((64, 64))
    with torch.no_grad():
        got = model(x, mode='tensor')
        want = authors_forward(sd, x)[0]
    assert (got - want).abs().max().item() < ATOL
