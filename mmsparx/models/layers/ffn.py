"""The convolutional FFN of SparX's blocks."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from mmsparx.models.layers.depthwise import (DepthwiseConv,
                                             pointwise_then_depthwise)
from mmsparx.models.layers.pointwise import PointwiseConv
from mmsparx.utils.malloc import MMAP_THRESHOLD


class ConvFFN(nn.Module):
    """1x1 (C -> hC), h + DWConv3x3(h), GELU, 1x1 (hC -> C)."""

    # CPU inference runs the batch in chunks whose hidden map stays below
    # glibc's largest mmap threshold (``mmsparx.utils.malloc``): larger
    # blocks are mapped afresh on every call, and faulting them in made
    # SparX-T's
    # stage-1 ConvFFN (batch 8: 38.5 MB hidden maps) take 43 ms on 2
    # threads against 34 ms in chunks of 6 + 2 images (1-3 image chunks:
    # 40 ms, and 25-26 ms against 24 ms unchunked at stage 2).
    CHUNK_BYTES = MMAP_THRESHOLD

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = PointwiseConv(dim, hidden)
        self.dwconv = DepthwiseConv(hidden, 3)
        self.fc2 = PointwiseConv(hidden, dim)

    def forward(self, x: Tensor, norm: Optional[nn.Module] = None) -> Tensor:
        """The FFN of ``x``, or of ``norm(x)`` (the norm joins fc1's
        product in training, see :meth:`PointwiseConv.normed`)."""
        if norm is not None and not torch.is_grad_enabled():
            x, norm = norm(x), None
        chunk = self._chunk(x)
        if chunk >= x.shape[0]:
            return self._mlp(x, norm)
        return torch.cat([self._mlp(part) for part in x.split(chunk)])

    def _mlp(self, x: Tensor, norm: Optional[nn.Module] = None) -> Tensor:
        if not torch.is_grad_enabled():
            return self.fc2(pointwise_then_depthwise(
                self.fc1, self.dwconv, x, residual=True, act='gelu'))
        hidden = self.fc1(x) if norm is None else self.fc1.normed(x, norm)
        if self.dwconv._trains_on_kernel(hidden):
            return self.fc2(self.dwconv.fused(hidden, residual=True,
                                              act='gelu'))
        # GELU goes into fc2's product, which recomputes it in backward
        # from the pre-activation: two hidden maps kept instead of three.
        return self.fc2.product(self.dwconv.fused(hidden, residual=True),
                                self.fc2.bias, act='gelu')

    def _chunk(self, x: Tensor) -> int:
        """Images per chunk: all of them unless CPU inference with a
        hidden map above ``CHUNK_BYTES``; a traced graph (FLOP counts, ONNX
        export) keeps the whole batch, whose size must not be baked in."""
        if x.device.type != 'cpu' or x.dim() != 4 or torch.is_grad_enabled() \
                or torch.jit.is_tracing():
            return x.shape[0]
        image = self.fc1.out_channels * x[0, 0].numel() * x.element_size()
        return min(x.shape[0], max(1, (self.CHUNK_BYTES - 1) // image))
