"""Random training batches in the form a toolbox's dataloader yields them
(uint8 images + data samples, before the data preprocessor), so that a
step benchmark runs a model's real ``train_step`` without a dataset."""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np
import torch


def _images(batch: int, size: Sequence[int],
            generator: torch.Generator) -> List[torch.Tensor]:
    return [torch.randint(0, 256, (3, *size), generator=generator,
                          dtype=torch.uint8) for _ in range(batch)]


def _meta(size: Sequence[int], index: int) -> dict:
    shape = tuple(int(s) for s in size)
    return dict(img_id=index, img_shape=shape, ori_shape=shape,
                pad_shape=shape, scale_factor=(1.0, 1.0), flip=False,
                flip_direction=None)


def detection_batch(batch: int, size: Sequence[int], num_classes: int,
                    boxes: int = 3, seed: int = 0) -> Dict[str, list]:
    """Images with ``boxes`` random boxes each (10-50 % of a side), their
    labels and filled-box instance masks (what Mask R-CNN's mask head
    trains on; box-only detectors ignore them)."""
    from mmdet.structures import DetDataSample
    from mmdet.structures.bbox import HorizontalBoxes
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    generator = torch.Generator().manual_seed(seed)
    height, width = int(size[0]), int(size[1])
    samples = []
    for index in range(batch):
        wh = (torch.rand(boxes, 2, generator=generator) * 0.4 + 0.1) * \
            torch.tensor([width, height])
        corner = torch.rand(boxes, 2, generator=generator) * (
            torch.tensor([width, height]) - wh)
        xyxy = torch.cat([corner, corner + wh], 1).floor()
        masks = np.zeros((boxes, height, width), dtype=np.uint8)
        for k, (x1, y1, x2, y2) in enumerate(xyxy.long().tolist()):
            masks[k, y1:y2, x1:x2] = 1
        sample = DetDataSample(metainfo=_meta(size, index))
        sample.gt_instances = InstanceData(
            bboxes=HorizontalBoxes(xyxy),
            labels=torch.randint(num_classes, (boxes, ),
                                 generator=generator),
            masks=BitmapMasks(masks, height, width))
        samples.append(sample)
    return dict(inputs=_images(batch, size, generator), data_samples=samples)


def segmentation_batch(batch: int, size: Sequence[int], num_classes: int,
                       seed: int = 0) -> Dict[str, list]:
    """Images with random label maps (some pixels 255, ignored)."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    generator = torch.Generator().manual_seed(seed)
    samples = []
    for index in range(batch):
        labels = torch.randint(num_classes, (1, *size), generator=generator)
        ignored = torch.rand(1, *size, generator=generator) < 0.05
        sample = SegDataSample(metainfo=_meta(size, index))
        sample.gt_sem_seg = PixelData(data=labels.masked_fill(ignored, 255))
        samples.append(sample)
    return dict(inputs=_images(batch, size, generator), data_samples=samples)
