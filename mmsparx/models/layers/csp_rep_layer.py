"""RepVGG block and CSPRepLayer: the fusion blocks of RT-DETR's CCFM.

Keys follow the official modules: ``conv1``/``conv2`` (+ ``conv`` once
fused) in ``RepVggBlock``; ``conv1``, ``conv2``, ``bottlenecks.{i}``,
``conv3`` in ``CSPRepLayer``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmsparx.models.layers.activations import build_activation
from mmsparx.models.layers.conv_norm import ConvNormAct


def fuse_conv_bn(branch: ConvNormAct) -> Tuple[Tensor, Tensor]:
    """Kernel and bias of one conv whose output equals ``norm(conv(x))``
    with the BN's running statistics (eval mode)."""
    bn = branch.norm
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    kernel = branch.conv.weight * scale.reshape(-1, 1, 1, 1)
    return kernel, bn.bias - bn.running_mean * scale


class RepVGGBlock(nn.Module):
    """act(ConvBN3x3(x) + ConvBN1x1(x)); no identity branch (RT-DETR's
    variant), stride 1.

    ``switch_to_deploy()`` folds both branches into one 3x3 conv with bias
    (Ding et al., RepVGG): equal outputs in eval mode, one conv at run time.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        act: activation after the sum ('silu', 'relu', 'gelu' or None).
    """

    def __init__(self, in_channels: int, out_channels: int,
                 act: Optional[str] = 'relu'):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.conv1 = ConvNormAct(in_channels, out_channels, 3)
        self.conv2 = ConvNormAct(in_channels, out_channels, 1)
        self.act = build_activation(act, inplace=True)
        self.deploy = False

    def forward(self, x: Tensor) -> Tensor:
        if self.deploy:
            return self.act(self.conv(x))
        return self.act(self.conv1(x) + self.conv2(x))

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        """Replace the two training branches by their fused 3x3 conv.

        Irreversible, and it bakes in the current BN running statistics,
        so call it on a trained model about to be used in eval mode.
        """
        if self.deploy:
            return
        k3, b3 = fuse_conv_bn(self.conv1)
        k1, b1 = fuse_conv_bn(self.conv2)
        conv = nn.Conv2d(self.in_channels, self.out_channels, 3, 1, 1,
                         bias=True).to(k3)
        # A 1x1 kernel is the centre tap of a zero 3x3 kernel (padding 1
        # keeps both branches aligned on the same output pixel).
        conv.weight.copy_(k3 + F.pad(k1, [1, 1, 1, 1]))
        conv.bias.copy_(b3 + b1)
        self.conv = conv
        del self.conv1, self.conv2
        self.deploy = True


class CSPRepLayer(nn.Module):
    """Cross-stage-partial fusion block of CCFM.

    ``conv3(bottlenecks(conv1(x)) + conv2(x))``: two 1x1 ConvBN-act
    branches to ``hidden = int(out_channels * expansion)`` channels, one
    through ``num_blocks`` RepVGG blocks, **summed** (not concatenated as in
    YOLO's CSP); ``conv3`` (1x1 ConvBN-act) maps back to ``out_channels``
    only when ``hidden != out_channels``.

    Args:
        in_channels: input channels (2 * hidden_dim in CCFM: a concat).
        out_channels: output channels.
        num_blocks: RepVGG blocks on the first branch (3 in RT-DETR).
        expansion: hidden width ratio (0.5 for R18/R34, 1.0 for R50/R101).
        act: activation of every brick.
    """

    def __init__(self, in_channels: int, out_channels: int,
                 num_blocks: int = 3, expansion: float = 1.0,
                 act: Optional[str] = 'silu'):
        super().__init__()
        hidden = int(out_channels * expansion)
        self.conv1 = ConvNormAct(in_channels, hidden, 1, act=act)
        self.conv2 = ConvNormAct(in_channels, hidden, 1, act=act)
        self.bottlenecks = nn.Sequential(
            *[RepVGGBlock(hidden, hidden, act=act) for _ in range(num_blocks)])
        self.conv3 = ConvNormAct(hidden, out_channels, 1, act=act) \
            if hidden != out_channels else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.conv3(self.bottlenecks(self.conv1(x)) + self.conv2(x))
