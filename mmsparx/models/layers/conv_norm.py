"""The conv -> BatchNorm -> activation brick of RT-DETR (PResNet, encoder).

Plain PyTorch on purpose: mmcv's ``ConvModule`` re-initialises its conv
(Kaiming-normal), and the mmdet port of RT-DETR only reached the official
AP once the convs kept PyTorch's default Kaiming-uniform (a = sqrt(5)).
State-dict keys follow the official ``ConvNormLayer``: ``conv.weight``,
``norm.{weight,bias,running_mean,running_var,num_batches_tracked}``.
"""
from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

ACTIVATIONS = ('silu', 'relu', 'gelu')


def make_activation(act: Optional[str]) -> nn.Module:
    """'silu', 'relu', 'gelu' (any case) or None (identity).

    SiLU and ReLU run in place like the official ones: they always follow
    a BN or a sum whose input autograd does not need.
    """
    if act is None:
        return nn.Identity()
    name = act.lower()
    if name == 'silu':
        return nn.SiLU(inplace=True)
    if name == 'relu':
        return nn.ReLU(inplace=True)
    if name == 'gelu':
        return nn.GELU()
    raise ValueError(f'act must be one of {ACTIVATIONS} or None, got {act!r}')


class ConvNormAct(nn.Module):
    """Conv (no bias, 'same' padding for odd kernels) -> BN -> activation.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel; padding is ``(kernel_size - 1) // 2``.
        stride: conv stride (2 halves the map, rounding up).
        act: 'silu', 'relu', 'gelu' or None for no activation.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 stride: int = 1, act: Optional[str] = None):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride,
                              padding=(kernel_size - 1) // 2, bias=False)
        self.norm = nn.BatchNorm2d(out_channels)
        self.act = make_activation(act)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(x)))
