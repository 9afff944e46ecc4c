"""Residual-branch bricks: stochastic depth and layer scale."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per sample."""

    def __init__(self, prob: float = 0.0):
        super().__init__()
        self.prob = prob

    def forward(self, x: Tensor) -> Tensor:
        if self.prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.prob
        mask = x.new_empty((x.shape[0], ) + (1, ) * (x.dim() - 1))
        return x * mask.bernoulli_(keep) / keep

    def extra_repr(self) -> str:
        return f'prob={self.prob}'


class LayerScale(nn.Module):
    """Per-channel scale (init 1) and bias (init 0) on the identity branch;
    stored as a depthwise 1x1 conv, as the authors' checkpoints are."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim, 1, 1, 1))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)

    def add_to(self, branch: Tensor, x: Tensor) -> Tensor:
        """``self(x) + branch`` in two passes over the map instead of three."""
        return torch.addcmul(branch, x, self.weight.view(1, -1, 1, 1)).add_(
            self.bias.view(1, -1, 1, 1))
