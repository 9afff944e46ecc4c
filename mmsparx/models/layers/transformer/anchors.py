"""RT-DETR's encoder anchors: one square box per memory token.

The query selection adds the encoder's box regression to these anchors
(in logit space), so their layout fixes which token a query comes from.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence, Tuple

import torch
from torch import Tensor

Shapes = Tuple[Tuple[int, int], ...]


def generate_anchors(spatial_shapes: Sequence[Sequence[int]],
                     grid_size: float = 0.05,
                     eps: float = 0.01,
                     device: torch.device | str | None = None,
                     dtype: torch.dtype = torch.float32
                     ) -> Tuple[Tensor, Tensor]:
    """Anchors for levels of shape (H_l, W_l), flattened row-major per level.

    Centres ((x + 0.5) / W, (y + 0.5) / H), width = height =
    ``grid_size * 2**level``. An anchor is valid when all four numbers lie
    in (eps, 1 - eps); invalid ones are +inf, so that a token at the border
    can never be selected with a finite box, and the memory there is zeroed
    by the caller with the mask.

    Returns:
        tuple: anchors [1, N, 4] as inverse sigmoid (log(a / (1 - a)), no
        eps clipping), valid_mask [1, N, 1] bool.
    """
    per_level = []
    for level, (h, w) in enumerate(spatial_shapes):
        # Built in float32 whatever ``dtype`` is, as the official code does,
        # then cast: fp16 would round the logits of the border anchors.
        ys, xs = torch.meshgrid(
            torch.arange(h, dtype=torch.float32),
            torch.arange(w, dtype=torch.float32), indexing='ij')
        cx = (xs + 0.5) / w
        cy = (ys + 0.5) / h
        wh = torch.full_like(cx, grid_size * 2.0**level)
        per_level.append(torch.stack([cx, cy, wh, wh], -1).reshape(-1, 4))
    anchors = torch.cat(per_level, 0)[None]
    valid = ((anchors > eps) & (anchors < 1 - eps)).all(-1, keepdim=True)
    logits = torch.log(anchors / (1 - anchors))
    logits = torch.where(valid, logits, torch.full_like(logits, float('inf')))
    return logits.to(device=device, dtype=dtype), valid.to(device)


class AnchorCache:
    """Anchors per (shapes, device, dtype), keeping the most recent
    ``max_entries`` (multi-scale training visits 13 sizes; eval one).

    A plain object, not a module: anchors are recomputed on the fly and
    never belong in a checkpoint.
    """

    def __init__(self, grid_size: float = 0.05, eps: float = 0.01,
                 max_entries: int = 16) -> None:
        self.grid_size = grid_size
        self.eps = eps
        self.max_entries = max_entries
        self._store: OrderedDict = OrderedDict()

    def __len__(self) -> int:
        return len(self._store)

    def __call__(self, spatial_shapes: Sequence[Sequence[int]],
                 device: torch.device | str,
                 dtype: torch.dtype = torch.float32) -> Tuple[Tensor, Tensor]:
        """(anchors [1, N, 4], valid_mask [1, N, 1]) for these shapes."""
        shapes: Shapes = tuple((int(h), int(w)) for h, w in spatial_shapes)
        key = (shapes, torch.device(device), dtype)
        if key in self._store:
            self._store.move_to_end(key)
            return self._store[key]
        value = generate_anchors(shapes, self.grid_size, self.eps, device,
                                 dtype)
        self._store[key] = value
        if len(self._store) > self.max_entries:
            self._store.popitem(last=False)
        return value
