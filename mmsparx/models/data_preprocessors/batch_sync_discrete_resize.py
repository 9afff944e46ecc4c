"""RT-DETR's per-batch multi-scale training: one size from a fixed list.

The official detector (``RTDETR.forward``, ``multi_scale``) resizes each
training batch, already 640x640, to a size drawn uniformly from
[480, 512, 544, 576, 608, 640, 640, 640, 672, 704, 736, 768, 800]
(640 listed three times, so drawn with weight 3/13) with
``F.interpolate``'s default nearest mode; its targets are normalised, so
they need no change. mmdet 3.3's ``BatchSyncRandomResize`` only draws from
a range, bilinearly, and keeps the first batch at its input size: this
augment draws from the list on every ``interval``-th call, on rank 0, and
broadcasts the choice so all ranks train at one size.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.dist import broadcast, get_dist_info
from torch import Tensor, nn

Size = Union[int, Tuple[int, int]]

INTERPOLATIONS = ('nearest', 'nearest-exact', 'bilinear', 'bicubic', 'area')
# Per-sample fields this box-only augment cannot resize: failing loudly beats
# masks that silently no longer match their image.
MASK_FIELDS = ('gt_sem_seg', 'gt_panoptic_seg')


def _as_hw(size: Size) -> Tuple[int, int]:
    """An int ``s`` -> (s, s); an (h, w) pair -> itself; both positive."""
    if isinstance(size, int) and not isinstance(size, bool):
        pair = (size, size)
    elif (isinstance(size, (tuple, list)) and len(size) == 2
          and all(isinstance(v, int) and not isinstance(v, bool)
                  for v in size)):
        pair = (int(size[0]), int(size[1]))
    else:
        raise TypeError(
            f'BatchSyncDiscreteResize: each size must be an int (a square '
            f'side) or an (h, w) pair of ints, got {size!r}')
    if min(pair) <= 0:
        raise ValueError(
            f'BatchSyncDiscreteResize: sizes must be positive, got {size!r}')
    return pair


class BatchSyncDiscreteResize(nn.Module):
    """Resize a training batch to a size drawn from ``sizes``, the same size
    on every rank.

    A batch augment of ``DetDataPreprocessor`` (it calls it in training
    only), after normalisation and padding. Ground-truth (and ignored)
    boxes are scaled by the per-axis factors, and each sample's
    ``img_shape``, ``pad_shape``, ``scale_factor`` and
    ``batch_input_shape`` follow the new size.

    Args:
        sizes: the sizes to draw from, uniformly by position (list a size
            twice to draw it twice as often); an int is a square side, a
            pair is (h, w).
        interval: draw a new size every ``interval`` calls (training
            iterations); the size is kept in between. Defaults to 1 (the
            official: every iteration).
        interpolation: ``F.interpolate`` mode. Defaults to 'nearest' (the
            official's ``F.interpolate`` default).
    """

    def __init__(self, sizes: Sequence[Size], interval: int = 1,
                 interpolation: str = 'nearest') -> None:
        super().__init__()
        if isinstance(sizes, (int, str)) or not len(sizes):
            raise ValueError(
                'BatchSyncDiscreteResize needs a non-empty list of sizes, '
                'e.g. sizes=[480, 512, 544, 576, 608, 640, 640, 640, 672, '
                f'704, 736, 768, 800]; got {sizes!r}')
        if not isinstance(interval, int) or isinstance(interval, bool) \
                or interval < 1:
            raise ValueError(
                'BatchSyncDiscreteResize: interval must be an int >= 1 '
                f'(1 draws a size every iteration), got {interval!r}')
        if interpolation not in INTERPOLATIONS:
            raise ValueError(
                f'BatchSyncDiscreteResize: interpolation must be one of '
                f'{INTERPOLATIONS} (F.interpolate modes; the official uses '
                f"'nearest'), got {interpolation!r}")
        self.sizes: List[Tuple[int, int]] = [_as_hw(s) for s in sizes]
        self.interval = interval
        self.interpolation = interpolation
        self._calls = 0
        self._size: Tuple[int, int] = self.sizes[0]

    @property
    def size(self) -> Tuple[int, int]:
        """The (h, w) the last batch was resized to."""
        return self._size

    def _draw(self, device: torch.device) -> Tuple[int, int]:
        """Rank 0 draws an index, every rank receives it (the broadcast is
        a no-op outside distributed training)."""
        rank, _ = get_dist_info()
        index = torch.zeros(1, dtype=torch.long, device=device)
        if rank == 0:
            index[0] = int(torch.randint(len(self.sizes), (1,)))
        broadcast(index, 0)
        return self.sizes[int(index.item())]

    def forward(self, inputs: Tensor, data_samples: list
                ) -> Tuple[Tensor, list]:
        """Resize ``inputs`` [B, C, H, W] and update ``data_samples``.

        Returns:
            The resized batch [B, C, h, w] and the same sample objects,
            updated in place.
        """
        if self._calls % self.interval == 0:
            self._size = self._draw(inputs.device)
        self._calls += 1
        height, width = inputs.shape[-2:]
        new_h, new_w = self._size
        scale_y, scale_x = new_h / height, new_w / width
        if (new_h, new_w) != (height, width):
            inputs = F.interpolate(inputs, size=(new_h, new_w),
                                   mode=self.interpolation)
        for sample in data_samples:
            self._update_sample(sample, scale_x, scale_y, (new_h, new_w))
        return inputs, data_samples

    @staticmethod
    def _update_sample(sample, scale_x: float, scale_y: float,
                       batch_shape: Tuple[int, int]) -> None:
        """Scale one sample's boxes and shapes by (scale_x, scale_y)."""
        masked = [f for f in MASK_FIELDS if f in sample]
        if 'gt_instances' in sample and 'masks' in sample.gt_instances:
            masked.insert(0, 'gt_instances.masks')
        if masked:
            raise ValueError(
                f'BatchSyncDiscreteResize resizes images and boxes only, but '
                f'a sample carries {masked}: load annotations with '
                f'with_mask=False / with_seg=False for box detection, or '
                f"use mmdet's BatchSyncRandomResize for other tasks.")

        def scaled(shape) -> Tuple[int, int]:
            return (int(round(shape[0] * scale_y)),
                    int(round(shape[1] * scale_x)))

        meta = dict(batch_input_shape=batch_shape)
        for key in ('img_shape', 'pad_shape'):
            if key in sample.metainfo:
                meta[key] = scaled(sample.metainfo[key])
        if 'scale_factor' in sample.metainfo:
            # original -> network input, now through the extra resize
            fx, fy = sample.metainfo['scale_factor']
            meta['scale_factor'] = (fx * scale_x, fy * scale_y)
        sample.set_metainfo(meta)
        for field in ('gt_instances', 'ignored_instances'):
            if field in sample and 'bboxes' in sample.get(field):
                instances = sample.get(field)
                instances.bboxes = _scale_boxes(instances.bboxes, scale_x,
                                                scale_y)


def _scale_boxes(boxes, scale_x: float, scale_y: float):
    """xyxy boxes (a Tensor or mmdet's box type) times (sx, sy, sx, sy)."""
    if isinstance(boxes, Tensor):
        factors = boxes.new_tensor([scale_x, scale_y, scale_x, scale_y])
        return boxes * factors
    boxes.rescale_((scale_x, scale_y))  # mmdet BaseBoxes, e.g. HorizontalBoxes
    return boxes
