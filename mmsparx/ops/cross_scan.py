"""The 4-direction cross scan of VMamba/SparX and its merge.

A (B, C, H, W) map becomes 4 sequences of length L = H*W: row-major,
column-major and both reversed. ``cross_merge`` is the adjoint: it folds
4 sequences back onto the map by summing, so autograd's backward of one is
the other and both run on any device.
"""
import torch
from torch import Tensor


def cross_scan(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, 4, C, H*W)."""
    b, c, h, w = x.shape
    rows = x.flatten(2)
    cols = x.transpose(2, 3).flatten(2)
    forward = torch.stack([rows, cols], dim=1)
    return torch.cat([forward, forward.flip(-1)], dim=1)


def cross_merge(y: Tensor, height: int, width: int) -> Tensor:
    """(B, 4, C, H*W) -> (B, C, H, W), summing the 4 directions."""
    b, k, c, length = y.shape
    if k != 4 or length != height * width:
        raise ValueError(f'cross_merge expects (B, 4, C, {height * width}), '
                         f'got {tuple(y.shape)}')
    y = y[:, :2] + y[:, 2:].flip(-1)
    rows = y[:, 0].view(b, c, height, width)
    cols = y[:, 1].view(b, c, width, height).transpose(2, 3)
    return rows + cols
