"""AIFI: RT-DETR's attention-based intra-scale feature interaction.

A stack of post-norm transformer encoder layers run on one feature level
(stride 32 in RT-DETR), with a fixed 2-D sin-cos position embedding added
to queries and keys only. The embedding is computed on every call, never
stored, so checkpoints hold only the layers' weights, under the official
keys ``layers.{k}.self_attn.{in_proj_weight,in_proj_bias,out_proj.*}``,
``layers.{k}.linear1``, ``linear2``, ``norm1``, ``norm2``.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from mmsparx.models.layers.activations import build_activation


def sincos_position_embedding_2d(height: int, width: int,
                                 embed_dim: int = 256,
                                 temperature: float = 10000.,
                                 device: Optional[torch.device] = None
                                 ) -> Tensor:
    """Fixed 2-D sin-cos embedding of a ``height x width`` map.

    Token ``t = y * width + x`` (the row-major order of ``flatten(2)`` on a
    [B, C, H, W] map) gets, with ``d = embed_dim // 4`` and
    ``omega_i = temperature ** (-i / d)``, i < d::

        [sin(y * omega), cos(y * omega), sin(x * omega), cos(x * omega)]

    The official code names the first half "w": it flattens a meshgrid
    over (w, h) w-major, so on its square maps the first half carries the
    row index y and the second the column x. Giving every token its own
    (y, x) in that order keeps the official values on square maps (their
    checkpoints give the same numbers) and is right on non-square maps,
    where the official order mixes tokens up.

    Returns:
        float32 tensor [1, height * width, embed_dim].
    """
    if embed_dim % 4:
        raise ValueError(f'embed_dim must be divisible by 4 for the 2-D '
                         f'sin-cos embedding, got {embed_dim}')
    pos_dim = embed_dim // 4
    omega = torch.arange(pos_dim, dtype=torch.float32, device=device) / pos_dim
    omega = 1. / temperature**omega
    grid_y, grid_x = torch.meshgrid(
        torch.arange(int(height), dtype=torch.float32, device=device),
        torch.arange(int(width), dtype=torch.float32, device=device),
        indexing='ij')
    out_y = grid_y.reshape(-1, 1) * omega[None]
    out_x = grid_x.reshape(-1, 1) * omega[None]
    return torch.cat([out_y.sin(), out_y.cos(), out_x.sin(), out_x.cos()],
                     dim=1)[None]


class AIFILayer(nn.Module):
    """One post-norm transformer encoder layer (the official
    ``TransformerEncoderLayer`` with ``normalize_before=False``).

    ``x = norm1(x + attn(q=k=x+pos, v=x)); x = norm2(x + ffn(x))``.

    Args:
        embed_dim: token width.
        num_heads: attention heads.
        ffn_dim: FFN hidden width.
        dropout: dropout on attention weights, FFN hidden and both residual
            branches (0 in RT-DETR).
        act: FFN activation ('gelu' in RT-DETR).
    """

    def __init__(self, embed_dim: int = 256, num_heads: int = 8,
                 ffn_dim: int = 1024, dropout: float = 0.,
                 act: str = 'gelu'):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(
            embed_dim, num_heads, dropout, batch_first=True)
        self.linear1 = nn.Linear(embed_dim, ffn_dim)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(ffn_dim, embed_dim)
        self.norm1 = nn.LayerNorm(embed_dim)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.activation = build_activation(act, inplace=True)

    def forward(self, src: Tensor, pos: Optional[Tensor] = None) -> Tensor:
        """src: [B, N, C]; pos: [1 or B, N, C] or None."""
        # The position is a query/key cue only: values stay content.
        qk = src if pos is None else src + pos
        attn = self.self_attn(qk, qk, value=src, need_weights=False)[0]
        src = self.norm1(src + self.dropout1(attn))
        ffn = self.linear2(self.dropout(self.activation(self.linear1(src))))
        return self.norm2(src + self.dropout2(ffn))


class AIFI(nn.Module):
    """``num_layers`` AIFI layers on a [B, C, H, W] map (official
    ``TransformerEncoder``; no final norm).

    Unlike the official deep copies of one layer, every layer gets its own
    PyTorch-default initialisation (identical for the single layer RT-DETR
    uses).

    Args:
        embed_dim: channels of the map (hidden_dim of the encoder).
        num_heads, ffn_dim, dropout, act: see :class:`AIFILayer`.
        num_layers: encoder layers (1 in RT-DETR).
        temperature: temperature of the sin-cos position embedding.
    """

    def __init__(self, embed_dim: int = 256, num_heads: int = 8,
                 ffn_dim: int = 1024, dropout: float = 0.,
                 act: str = 'gelu', num_layers: int = 1,
                 temperature: float = 10000.):
        super().__init__()
        self.embed_dim = embed_dim
        self.temperature = temperature
        self.layers = nn.ModuleList([
            AIFILayer(embed_dim, num_heads, ffn_dim, dropout, act)
            for _ in range(num_layers)
        ])

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, C, H, W] -> [B, C, H, W]."""
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        pos = sincos_position_embedding_2d(
            h, w, self.embed_dim, self.temperature, x.device).to(x.dtype)
        for layer in self.layers:
            tokens = layer(tokens, pos)
        return tokens.transpose(1, 2).reshape(b, c, h, w).contiguous()
