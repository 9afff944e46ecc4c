"""The plain MLP of DETR-style heads (RT-DETR's ``MLP``)."""
from __future__ import annotations

from torch import Tensor, nn


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU between them (none after the
    last). The layers sit in ``layers`` so the official keys
    (``*.layers.{k}.weight``) load unchanged.

    Args:
        in_dims (int): Input features.
        hidden_dims (int): Features of every hidden layer.
        out_dims (int): Output features.
        num_layers (int): Number of Linear layers (>= 1).
    """

    def __init__(self, in_dims: int, hidden_dims: int, out_dims: int,
                 num_layers: int) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f'num_layers must be >= 1, got {num_layers}')
        dims = [in_dims] + [hidden_dims] * (num_layers - 1) + [out_dims]
        self.layers = nn.ModuleList(
            nn.Linear(i, o) for i, o in zip(dims[:-1], dims[1:]))
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        """[..., in_dims] -> [..., out_dims]."""
        last = len(self.layers) - 1
        for k, layer in enumerate(self.layers):
            x = layer(x)
            if k < last:
                x = self.act(x)
        return x
