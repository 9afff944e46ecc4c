"""SpaRTAN's layers (paper section III): the Spatial SMixer, the
wave-based CMixer and the block that joins them.

Attribute names follow the authors' checkpoints (``smixer.h_conv``,
``cmixer.theta``, ``scale_1`` ...), so inside a block their keys load
unchanged; only the flat ``layers.{k}`` index is remapped by the converter.

Choices the paper leaves open, made here:

* every ConvBN uses BatchNorm with eps 1e-6 (the stem's value in the
  authors' code, one brick for all convs);
* feature decomposition is exactly ``x + gamma * (x - GAP(x))`` after the
  1x1 projection, with no activation (MogaNet's variant adds one; the authors'
  does not);
* the complex weight pairs adjacent channels (2k real, 2k+1 imaginary): the
  stored shape ``(1, 1, 1, n/2, 2)`` is a channels-last complex view;
* F_max is the argmax over the CMixer's (normalised) input channels, used
  as an index into the n = e*C projected channels (C <= n, always valid).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmsparx.archs.spartan import CONV_TYPES
from mmsparx.models.layers.activations import build_activation
from mmsparx.models.layers.bricks import DropPath
from mmsparx.models.layers.conv_norm import ConvNormAct


def spartan_conv(in_channels: int, out_channels: int, kernel_size: int,
                 stride: int = 1, padding: int = 0, dilation: int = 1,
                 groups: int = 1, norm: bool = True,
                 act: Optional[str] = 'GELU') -> ConvNormAct:
    """SpaRTAN's conv -> BN -> activation: BN eps 1e-6, explicit padding,
    activations not in place (as the authors' ``ConvBN``)."""
    return ConvNormAct(in_channels, out_channels, kernel_size, stride, act,
                       padding, dilation, groups, norm, eps=1e-6,
                       inplace=False)


def global_avg_pool(x: Tensor) -> Tensor:
    """GAP as adaptive pooling (not ``mean``): FLOP counters (fvcore,
    mmengine) price it, as in the papers' figures."""
    return F.adaptive_avg_pool2d(x, 1)


class SqueezeExcite(nn.Module):
    """SE layer (Hu et al.): GAP -> 1x1 (C -> r) -> ReLU -> 1x1 (r -> C)
    -> sigmoid, a per-channel gate on the input."""

    def __init__(self, channels: int, reduced: int):
        super().__init__()
        if reduced < 1:
            raise ValueError(f'SE needs at least one squeezed channel, got '
                             f'{reduced} for {channels} channels')
        self.squeeze = nn.Conv2d(channels, reduced, 1)
        self.act = nn.ReLU(inplace=True)
        self.expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        gate = self.expand(self.act(self.squeeze(global_avg_pool(x))))
        return x * gate.sigmoid()


class SMixer(nn.Module):
    """Spatial SMixer, ``S(FD(X))`` (eqs. 3 and 6).

    FD: a 1x1 projection to i = C/2 channels, reweighted by
    ``gamma * (x - GAP(x))``. S: a high-frequency branch (3x3 ConvBN-GELU,
    SE) and a low-frequency branch (two stacked 3x3 dilation-2 convs, the
    5x5-dilation-2 field at lower cost, Table V; only the second has BN and
    GELU, then SE), concatenated and mixed by a 1x1 conv (C -> C).

    Args:
        dim: channels C (even).
        depthwise: 'D' convs (groups = i) instead of full convs ('F'),
            Table VIII; the paper's hybrid uses full convs in stages 1-2.
        act: activation after each ConvBN.
    """

    def __init__(self, dim: int, depthwise: bool = False, act: str = 'GELU'):
        super().__init__()
        if dim % 2:
            raise ValueError(f'SMixer splits C into two halves; C={dim} is '
                             'odd')
        inner = dim // 2
        groups = inner if depthwise else 1
        self.proj_in = nn.Conv2d(dim, inner, 1)
        self.gamma = nn.Parameter(torch.full((1, inner, 1, 1), 1e-5))
        self.h_conv = spartan_conv(inner, inner, 3, padding=1, groups=groups,
                                   act=act)
        self.l_conv = nn.Sequential(
            spartan_conv(inner, inner, 3, padding=2, dilation=2,
                         groups=groups, norm=False, act=None),
            spartan_conv(inner, inner, 3, padding=2, dilation=2,
                         groups=groups, act=act))
        self.h_attn = SqueezeExcite(inner, inner // 4)
        self.l_attn = SqueezeExcite(inner, inner // 4)
        self.proj_out = nn.Conv2d(2 * inner, dim, 1)

    def feature_decomposition(self, x: Tensor) -> Tensor:
        """FD: local 1x1 features, their deviation from the global context
        reweighted by the learned gamma (diversifies spatial statistics)."""
        x = self.proj_in(x)
        return torch.addcmul(x, self.gamma, x - global_avg_pool(x))

    def forward(self, x: Tensor) -> Tensor:
        x = self.feature_decomposition(x)
        high = self.h_attn(self.h_conv(x))
        low = self.l_attn(self.l_conv(x))
        return self.proj_out(torch.cat((high, low), dim=1))


def gather_fmax(x: Tensor, *features: Tensor) -> tuple:
    """F_max: at every pixel, the channel where ``x`` is largest; returns
    each of ``features`` read at that channel, shape (B, 1, H, W).

    ``x`` (B, C, H, W) picks the index, ``features`` (B, n, H, W) with
    n >= C are gathered there; the index is not differentiated (argmax),
    the gathered values are.
    """
    index = x.argmax(dim=1, keepdim=True)
    return tuple(f.gather(1, index) for f in features)


def complex_modulation(feat: Tensor, weight: Tensor) -> Tensor:
    """Channel pairs (2k, 2k+1) as complex numbers times ``weight`` (eq. 9),
    always in float32 (autocast off): the products of two half-precision
    waves cancel and reinforce each other, where bfloat16's 8-bit mantissa
    loses the small differences.

    Args:
        feat: (B, n, H, W), n even, any float dtype.
        weight: (..., n/2, 2) real and imaginary parts.

    Returns:
        (B, n, H, W) float32.
    """
    b, n, h, w = feat.shape
    with torch.autocast(device_type=feat.device.type, enabled=False):
        feat = feat.float()
        w_re, w_im = weight.float().reshape(n // 2, 2).unbind(-1)
        # (re + i im)(a + i b) = (a re - b im) + i (b re + a im): each
        # channel scaled, plus its partner scaled; two full-size temporaries
        # instead of six half-size ones (this runs at stride 4 with n = 4C).
        own = torch.stack((w_re, w_re), dim=-1).view(1, n, 1, 1)
        partner = torch.stack((-w_im, w_im), dim=-1).view(1, n, 1, 1)
        swapped = feat.reshape(b, n // 2, 2, h, w).flip(2).reshape(b, n, h, w)
        return (feat * own).addcmul_(swapped, partner)


class WaveCMixer(nn.Module):
    """Wave-based CMixer, ``C(W(X))`` (eqs. 7-10).

    W: the phase theta = GELU(1x1 C -> n) (a linear approximation of the
    sinusoid, more stable than sin/cos) and the amplitude w = 1x1 C -> n;
    every channel is superposed with the wave at the pixel's maximally
    activated channel, ``w * theta + w_max * theta_max``, then modulated by
    a learned complex weight (float32). C: 3x3 ConvBN-GELU, SE (n -> C/4),
    1x1 n -> C.

    Args:
        dim: channels C.
        expand_ratio: e, n = e * C (n even).
        depthwise: the stage's conv type. 'F' stages (False) use a
            depthwise 3x3 here (groups = n), 'D' stages (True) a grouped
            3x3 with groups = C (e channels each): the authors' pairing,
            which keeps Table VIII's parameter counts.
        act: activation of theta and after the ConvBN.
    """

    def __init__(self, dim: int, expand_ratio: float, depthwise: bool = False,
                 act: str = 'GELU'):
        super().__init__()
        hidden = int(dim * expand_ratio)
        if hidden % 2 or hidden < dim:
            raise ValueError(f'WaveCMixer needs an even n = e*C >= C, got '
                             f'n={hidden} for C={dim}, e={expand_ratio}')
        if depthwise and hidden % dim:
            raise ValueError(f'a D-stage CMixer groups n={hidden} channels '
                             f'by C={dim}; e must be a whole number')
        self.theta = nn.Conv2d(dim, hidden, 1)
        self.theta_act = build_activation(act)
        self.proj = nn.Conv2d(dim, hidden, 1)
        self.complex = nn.Parameter(torch.randn(1, 1, 1, hidden // 2, 2))
        self.conv = spartan_conv(hidden, hidden, 3, padding=1,
                                 groups=dim if depthwise else hidden,
                                 act=act)
        self.attn = SqueezeExcite(hidden, dim // 4)
        self.proj_out = nn.Conv2d(hidden, dim, 1)

    def wave(self, x: Tensor) -> Tensor:
        """W(X): superposition at F_max, then the complex modulation; the
        result is float32 whatever autocast does."""
        theta, amp = self.theta_act(self.theta(x)), self.proj(x)
        theta_max, amp_max = gather_fmax(x, theta, amp)
        with torch.autocast(device_type=x.device.type, enabled=False):
            feat = (amp.float() * theta.float()).add_(
                amp_max.float() * theta_max.float())
        return complex_modulation(feat, self.complex)

    def forward(self, x: Tensor) -> Tensor:
        # To the weights' dtype: a no-op in float32 and under autocast (the
        # conv casts for itself); keeps a model run in half precision whole.
        feat = self.wave(x).to(self.proj_out.weight.dtype)
        return self.proj_out(self.attn(self.conv(feat)))


class SpaRTANBlock(nn.Module):
    """``Y = X + s1 * SMixer(GN(X))``, ``Z = Y + s2 * CMixer(GN(Y))`` (eqs.
    1-2) with GroupNorm(1 group, eps 1e-6, LayerNorm over C, H, W: Table
    VII's pre-mixer norm), per-channel scales (init 1e-5) and drop path.

    Args:
        dim: channels C.
        expand_ratio: CMixer's e.
        conv_type: 'F' (full) or 'D' (depthwise), Table VIII.
        drop_path: stochastic depth probability of this block.
        layer_scale_init: initial value of ``scale_1`` / ``scale_2``.
        act: activation inside both mixers.
    """

    def __init__(self, dim: int, expand_ratio: float, conv_type: str = 'F',
                 drop_path: float = 0.0, layer_scale_init: float = 1e-5,
                 act: str = 'GELU'):
        super().__init__()
        if conv_type not in CONV_TYPES:
            raise ValueError(f"conv_type must be 'F' (full) or 'D' "
                             f'(depthwise), got {conv_type!r}')
        depthwise = conv_type == 'D'
        self.norm_1 = nn.GroupNorm(1, dim, eps=1e-6)
        self.smixer = SMixer(dim, depthwise, act)
        self.norm_2 = nn.GroupNorm(1, dim, eps=1e-6)
        self.cmixer = WaveCMixer(dim, expand_ratio, depthwise, act)
        self.scale_1 = nn.Parameter(torch.full((1, dim, 1, 1),
                                               layer_scale_init))
        self.scale_2 = nn.Parameter(torch.full((1, dim, 1, 1),
                                               layer_scale_init))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.scale_1 * self.smixer(self.norm_1(x)))
        return x + self.drop_path(self.scale_2 * self.cmixer(self.norm_2(x)))
