"""The one conv -> BatchNorm -> activation brick: RT-DETR's (PResNet,
encoder) and SpaRTAN's (stem, patch merging, mixers).

Plain PyTorch on purpose: mmcv's ``ConvModule`` re-initialises its conv
(Kaiming-normal), and the mmdet port of RT-DETR only reached the official
AP once the convs kept PyTorch's default Kaiming-uniform (a = sqrt(5)).
State-dict keys follow the official ``ConvNormLayer``: ``conv.weight``,
``norm.{weight,bias,running_mean,running_var,num_batches_tracked}``.
"""
from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from mmsparx.models.layers.activations import build_activation


class ConvNormAct(nn.Module):
    """Conv (no bias) -> BN -> activation.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel.
        stride: conv stride (2 halves the map, rounding up).
        act: an activation of :mod:`.activations` (any case) or None.
        padding: None: ``(kernel_size - 1) // 2`` ('same' for odd kernels,
            RT-DETR's); SpaRTAN gives its own.
        dilation, groups: as ``nn.Conv2d``.
        norm: False leaves a bare conv (SpaRTAN's first dilated conv); its
            key is still ``conv.weight``.
        eps: BN's epsilon (1e-5 in RT-DETR, 1e-6 in SpaRTAN).
        inplace: SiLU / ReLU in place (RT-DETR's; they follow the BN).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 stride: int = 1, act: Optional[str] = None,
                 padding: Optional[int] = None, dilation: int = 1,
                 groups: int = 1, norm: bool = True, eps: float = 1e-5,
                 inplace: bool = True):
        super().__init__()
        if padding is None:
            padding = (kernel_size - 1) // 2
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride,
                              padding, dilation, groups, bias=False)
        self.norm = nn.BatchNorm2d(out_channels, eps=eps) if norm else \
            nn.Identity()
        self.act = build_activation(act, inplace)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(x)))
