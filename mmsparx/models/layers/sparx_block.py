"""A SparX layer: normal ("DPE -> VSS block") or ganglion ("DPE -> DMCA ->
VSS block"); the two differ only in the token mixer's input projection."""
from __future__ import annotations

from typing import Optional, Sequence

from torch import Tensor, nn

from mmsparx.models.layers.bricks import DropPath, LayerScale
from mmsparx.models.layers.depthwise import DepthwiseConv
from mmsparx.models.layers.ffn import ConvFFN
from mmsparx.models.layers.norms import GroupNorm


class SparXBlock(nn.Module):
    """x += DWConv3x3(x); x = ls1(x) + mixer(GN(x)); x = ls2(x) + FFN(GN(x)).

    Args:
        dim: channels.
        mixer: the token mixer (SS2D, or window attention for SparX-Swin);
            a ganglion layer's mixer also takes the connected outputs.
        mlp_ratio: ConvFFN hidden width / dim.
        layer_scale: scale the identity branches (stages 3 and 4 in SparX).
        drop_path: stochastic depth rate of this block.
    """

    def __init__(self, dim: int, mixer: nn.Module, mlp_ratio: float = 4.0,
                 layer_scale: bool = False, drop_path: float = 0.0):
        super().__init__()
        self.pos_embed = DepthwiseConv(dim, 3)
        self.norm = GroupNorm(1, dim)
        self.op = mixer
        self.norm2 = GroupNorm(1, dim)
        self.mlp = ConvFFN(dim, int(dim * mlp_ratio))
        self.layerscale_1 = LayerScale(dim) if layer_scale else nn.Identity()
        self.layerscale_2 = LayerScale(dim) if layer_scale else nn.Identity()
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor,
                inputs: Optional[Sequence[Tensor]] = None) -> Tensor:
        x = self.pos_embed.fused(x, residual=True)  # DPE
        if inputs is None and getattr(self.op, 'takes_norm', False):
            # The norms go into the next product (mixer's and FFN's), which
            # keeps x for backward in place of the normalised map.
            mixed = self.op(x, norm=self.norm)
        else:
            normed = self.norm(x)
            mixed = self.op(normed) if inputs is None else \
                self.op(normed, inputs)
        x = self._residual(self.layerscale_1, x, self.drop_path(mixed))
        return self._residual(self.layerscale_2, x,
                              self.drop_path(self.mlp(x, norm=self.norm2)))

    @staticmethod
    def _residual(scale: nn.Module, x: Tensor, branch: Tensor) -> Tensor:
        if isinstance(scale, LayerScale):
            return scale.add_to(branch, x)
        return x + branch
