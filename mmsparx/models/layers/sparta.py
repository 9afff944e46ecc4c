"""SparseSwin's Sparse Transformer (SparTa) block and its token converters.

The SparTa block (paper section 3) turns a stride-16 map into
t latent tokens with the sparse token converter (3x3 conv, then a linear map
over the spatial positions) and runs pre-norm transformer layers on them, so
attention costs O(t^2) whatever the image size. :class:`TokenToSpace` is the
way back to a spatial map that the dense backbone needs.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from mmsparx.models.layers.bricks import DropPath


class SparseTokenConverter(nn.Module):
    """(B, C, H, W) -> (B, t, e): 3x3 conv (C -> e, 'same'), then each of the
    t tokens is a learned weighted sum over the H*W positions.

    The spatial map (``to_tokens``, a Linear over H*W as in the authors'
    ``lin_t``) is learned for one grid, ``grid_size``. With ``resample=True``
    another grid gets that map resized to it (bilinear, antialiased when
    shrinking) and scaled by ``grid area / new area``: every position then
    stands for a smaller (or larger) part of the image, and the scale keeps a
    token's sum over the image the same, as a resized position embedding
    does for a ViT. On ``grid_size`` itself the map is used unchanged, so the
    authors' weights give the authors' tokens. Without ``resample`` another
    grid is an error.

    Args:
        in_channels: C of the input map.
        token_dims: e, the width of each token.
        num_tokens: t.
        grid_size: (H, W) of the map the spatial weights are learned for.
        resample: accept other grids by resizing the spatial weights.
    """

    def __init__(self, in_channels: int, token_dims: int, num_tokens: int,
                 grid_size: Tuple[int, int], resample: bool = False):
        super().__init__()
        self.grid_size = (int(grid_size[0]), int(grid_size[1]))
        self.num_tokens = num_tokens
        self.resample = resample
        self.conv = nn.Conv2d(in_channels, token_dims, 3, padding=1)
        self.to_tokens = nn.Linear(self.grid_size[0] * self.grid_size[1],
                                   num_tokens)

    def spatial_weight(self, size: Sequence[int]) -> Tensor:
        """The (t, h*w) position weights for an (h, w) map."""
        size = (int(size[0]), int(size[1]))
        if size == self.grid_size:
            return self.to_tokens.weight
        if not self.resample:
            raise ValueError(
                f'SparseTokenConverter: the spatial-to-token map is learned '
                f'for a {self.grid_size[0]}x{self.grid_size[1]} grid, got '
                f'{size[0]}x{size[1]}; feed that grid or build it with '
                f'resample=True.')
        grid_h, grid_w = self.grid_size
        weight = self.to_tokens.weight.view(1, self.num_tokens, grid_h,
                                            grid_w)
        shrink = size[0] < grid_h or size[1] < grid_w
        weight = F.interpolate(weight, size=size, mode='bilinear',
                               align_corners=False, antialias=shrink)
        scale = (grid_h * grid_w) / (size[0] * size[1])
        return (weight * scale).view(self.num_tokens, size[0] * size[1])

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x).flatten(2)  # B, e, H*W (row-major, as the authors')
        tokens = F.linear(y, self.spatial_weight(x.shape[-2:]),
                          self.to_tokens.bias)  # B, e, t
        return tokens.transpose(1, 2)

    def extra_repr(self) -> str:
        return (f'grid_size={self.grid_size}, num_tokens={self.num_tokens}, '
                f'resample={self.resample}')


class SparTaAttention(nn.Module):
    """Multi-head self-attention over the tokens that also returns its
    attention maps (B, heads, t, t), which the regulariser penalises.

    The maps are returned before attention dropout: the penalty is on what
    the model computes, not on a random mask of it.
    """

    def __init__(self, dims: int, num_heads: int, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        if dims % num_heads:
            raise ValueError(f'SparTa attention: token width {dims} is not '
                             f'divisible by {num_heads} heads')
        self.num_heads = num_heads
        self.scale = (dims // num_heads) ** -0.5
        self.qkv = nn.Linear(dims, dims * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dims, dims)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = torch.softmax(q @ k.transpose(-2, -1) * self.scale, dim=-1)
        out = (self.attn_drop(attn) @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(out)), attn


class SparTaMLP(nn.Module):
    """fc1 -> GELU -> fc2 (-> GELU). The authors' MLP applies GELU after fc2
    as well (``out_act=True``); their weights need it to give their outputs.
    """

    def __init__(self, dims: int, hidden: int, drop: float = 0.0,
                 out_act: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(dims, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dims)
        self.drop = nn.Dropout(drop)
        self.out_act = out_act

    def forward(self, x: Tensor) -> Tensor:
        x = self.fc2(self.drop(self.act(self.fc1(x))))
        return self.drop(self.act(x) if self.out_act else x)


class SparTaLayer(nn.Module):
    """One pre-norm transformer layer on the tokens:
    x += MHSA(LN(x)); x += MLP(LN(x)). Returns the tokens and the attention
    maps."""

    def __init__(self, dims: int, num_heads: int, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, mlp_out_act: bool = True,
                 drop_path: float = 0.0, attn_drop: float = 0.0,
                 drop: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dims)
        self.attn = SparTaAttention(dims, num_heads, qkv_bias, attn_drop, drop)
        self.norm2 = nn.LayerNorm(dims)
        self.mlp = SparTaMLP(dims, int(dims * mlp_ratio), drop, mlp_out_act)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        out, attn = self.attn(self.norm1(x))
        x = x + self.drop_path(out)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x, attn


class SparTaBlock(nn.Module):
    """Sparse token converter + ``depth`` SparTa layers.

    Args:
        in_channels: C of the stride-16 input map.
        num_tokens: t, the latent tokens (49 in the paper).
        token_dims: e, their width (512 in the authors' public setting).
        depth: transformer layers on the tokens (2).
        num_heads: heads of each layer (16).
        grid_size: (H, W) of the input map the converter is learned for.
        mlp_ratio: MLP hidden width / e.
        qkv_bias: bias in the qkv projection (True in the public setting).
        mlp_out_act: GELU after fc2 too, as the authors' MLP.
        drop_path: one stochastic depth rate per layer (or one for all).
        attn_drop: attention dropout.
        drop: dropout after the projections and in the MLP.
        resample: let the converter take any grid (see
            :class:`SparseTokenConverter`).
        with_cp: activation checkpointing per layer.

    Shape: (B, C, H, W) -> tokens (B, t, e) and a list of ``depth``
    attention maps (B, heads, t, t).
    """

    def __init__(self, in_channels: int, num_tokens: int, token_dims: int,
                 depth: int, num_heads: int, grid_size: Tuple[int, int],
                 mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 mlp_out_act: bool = True,
                 drop_path: Sequence[float] | float = 0.0,
                 attn_drop: float = 0.0, drop: float = 0.0,
                 resample: bool = False, with_cp: bool = False):
        super().__init__()
        if isinstance(drop_path, (int, float)):
            drop_path = [float(drop_path)] * depth
        if len(drop_path) != depth:
            raise ValueError(f'SparTaBlock: {len(drop_path)} drop path rates '
                             f'for {depth} layers')
        self.converter = SparseTokenConverter(in_channels, token_dims,
                                              num_tokens, grid_size, resample)
        self.layers = nn.ModuleList([
            SparTaLayer(token_dims, num_heads, mlp_ratio, qkv_bias,
                        mlp_out_act, rate, attn_drop, drop)
            for rate in drop_path])
        self.with_cp = with_cp

    def forward(self, x: Tensor) -> Tuple[Tensor, List[Tensor]]:
        tokens = self.converter(x)
        maps = []
        for layer in self.layers:
            if self.with_cp and tokens.requires_grad:
                tokens, attn = checkpoint(layer, tokens, use_reentrant=False)
            else:
                tokens, attn = layer(tokens)
            maps.append(attn)
        return tokens, maps


class TokenToSpace(nn.Module):
    """SparTa tokens back to a stride-32 map, for any input size.

    The authors' dense variant reshapes an MLP output to a fixed
    (H/32 * W/32) grid, so it only works at one size. Here every cell of the
    stride-32 grid *asks* the tokens for its features:

    1. the cell's own content: Swin's patch merging of the stride-16 map
       (its 2x2 neighbours concatenated, LN, linear 4C -> e), the layer Swin
       itself uses to enter stage 4;
    2. cross-attention: the cell (LN) is the query, the t normalised tokens
       are keys and values, and the answer is added to the cell (residual);
       then an MLP (pre-norm, residual).

    A token is a learned weighted sum over the positions of the stride-16
    map, so attention from a cell to the tokens reads back the global
    context that was gathered there. Nothing depends on the number of cells:
    any H x W works, and the cost is linear in H*W (cells x t).

    Args:
        in_channels: C of the stride-16 map.
        dims: e, the token width and the output channels.
        num_heads: cross-attention heads.
        mlp_ratio: MLP hidden width / e.
        drop_path: stochastic depth on both residual branches.
    """

    def __init__(self, in_channels: int, dims: int, num_heads: int,
                 mlp_ratio: float = 4.0, drop_path: float = 0.0):
        super().__init__()
        try:
            from mmcv.cnn.bricks.transformer import PatchMerging
        except ImportError as err:
            raise ImportError('SparseSwin uses mmcv\'s PatchMerging: install '
                              'mmcv (see README)') from err
        self.merge = PatchMerging(in_channels, dims,
                                  norm_cfg=dict(type='LN'))
        self.norm_query = nn.LayerNorm(dims)
        self.cross_attn = nn.MultiheadAttention(dims, num_heads,
                                                batch_first=True)
        self.norm_mlp = nn.LayerNorm(dims)
        self.mlp = SparTaMLP(dims, int(dims * mlp_ratio), out_act=False)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, hw_shape: Tuple[int, int],
                tokens: Tensor) -> Tuple[Tensor, Tuple[int, int]]:
        """x: (B, H*W, C) stride-16 map, tokens: (B, t, e) -> cells
        (B, h*w, e) and (h, w) = (ceil(H/2), ceil(W/2)), as mmcv's
        PatchMerging returns."""
        cells, out_hw = self.merge(x, hw_shape)
        query = self.norm_query(cells)
        read, _ = self.cross_attn(query, tokens, tokens, need_weights=False)
        cells = cells + self.drop_path(read)
        cells = cells + self.drop_path(self.mlp(self.norm_mlp(cells)))
        return cells, tuple(out_hw)
