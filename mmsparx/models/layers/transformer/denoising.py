"""RT-DETR's contrastive denoising (CDN) queries for training.

Each group holds every ground truth twice: a positive copy (box noise under
half its size, to be reconstructed) and a negative copy (noise of one to two
half sizes, to be classified as background). Groups are prepended to the
matching queries and masked so that no group and no matching query can
peek at another group's answer.

Randomness comes from the global RNG (``torch.manual_seed`` makes it
reproducible), drawn in the official order: label-noise mask, new labels,
box-noise signs, box-noise magnitudes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch
from torch import Tensor, nn

from mmdet.models.layers.transformer import inverse_sigmoid
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy, bbox_xyxy_to_cxcywh


@dataclass
class DenoisingQueries:
    """Denoising queries of one batch.

    Attributes:
        query (Tensor): [B, Ndn, D] label embeddings (trainable).
        ref_logits (Tensor): [B, Ndn, 4] noised boxes, inverse sigmoid of
            normalised cxcywh.
        attn_mask (Tensor): [Ndn + Nq, Ndn + Nq] bool, True = may NOT attend
            (PyTorch ``nn.MultiheadAttention`` convention).
        meta (dict): ``positive_idx`` (per image, LongTensor of its positive
            queries, group-major: group g, gt j), ``num_groups`` (int),
            ``split`` ((Ndn, Nq)).
    """
    query: Tensor
    ref_logits: Tensor
    attn_mask: Tensor
    meta: dict


def denoising_attn_mask(num_groups: int, group_size: int, num_queries: int,
                        device: torch.device | str | None = None) -> Tensor:
    """[Ndn + Nq, Ndn + Nq] bool mask, True = blocked, Ndn = groups * size.

    Matching queries cannot see any denoising query (at inference there are
    none); a denoising group sees itself and the matching queries only.
    """
    num_dn = num_groups * group_size
    total = num_dn + num_queries
    group = torch.arange(total, device=device) // group_size
    is_dn = torch.arange(total, device=device) < num_dn
    other_group = group[:, None] != group[None, :]
    mask = is_dn[None, :] & (other_group | ~is_dn[:, None])
    return mask


def build_contrastive_denoising(gt_labels: List[Tensor],
                                gt_boxes: List[Tensor],
                                class_embed: nn.Embedding,
                                num_classes: int,
                                num_queries: int,
                                num_denoising: int = 100,
                                label_noise_ratio: float = 0.5,
                                box_noise_scale: float = 1.0
                                ) -> Optional[DenoisingQueries]:
    """Build the denoising groups (official
    ``get_contrastive_denoising_training_group``).

    Args:
        gt_labels (list[Tensor]): Per image [n_i] int in [0, num_classes).
        gt_boxes (list[Tensor]): Per image [n_i, 4] normalised cxcywh.
        class_embed (nn.Embedding): num_classes + 1 rows, the last the
            padding row used by padded slots.
        num_classes (int): Number of classes.
        num_queries (int): Matching queries after the denoising ones.
        num_denoising (int): Budget: groups = max(1, num_denoising // max_gt).
        label_noise_ratio (float): A real slot's label is replaced by a
            uniformly random class with probability ``ratio * 0.5``.
        box_noise_scale (float): Noise unit as a fraction of (w/2, h/2).

    Returns:
        DenoisingQueries or None: None without ground truth in the batch or
        with ``num_denoising <= 0``.

    Unlike the official code, the boxes go through ``inverse_sigmoid`` even
    with ``box_noise_scale == 0`` (the official code then hands sigmoid-space
    boxes to the decoder as logits).
    """
    if num_denoising <= 0:
        return None
    num_gts = [len(labels) for labels in gt_labels]
    max_gt = max(num_gts, default=0)
    if max_gt == 0:
        return None
    device = class_embed.weight.device
    num_groups = max(1, num_denoising // max_gt)
    batch = len(num_gts)

    labels = torch.full((batch, max_gt), num_classes, dtype=torch.long,
                        device=device)
    boxes = torch.zeros((batch, max_gt, 4), device=device)
    real = torch.zeros((batch, max_gt), dtype=torch.bool, device=device)
    for i, n in enumerate(num_gts):
        if n:
            labels[i, :n] = gt_labels[i].to(device=device, dtype=torch.long)
            boxes[i, :n] = gt_boxes[i].to(device=device, dtype=boxes.dtype)
            real[i, :n] = True

    # Layout along the query axis: group g occupies [2 M g, 2 M (g + 1)),
    # positives first, then negatives (M = max_gt).
    repeats = 2 * num_groups
    labels = labels.repeat(1, repeats)
    boxes = boxes.repeat(1, repeats, 1)
    real = real.repeat(1, repeats)
    negative = torch.zeros(2 * max_gt, dtype=torch.bool, device=device)
    negative[max_gt:] = True
    negative = negative.repeat(num_groups)  # [Ndn]
    num_dn = 2 * max_gt * num_groups

    positive_idx = [
        (torch.arange(num_groups, device=device)[:, None] * 2 * max_gt +
         torch.arange(n, device=device)[None, :]).flatten()
        for n in num_gts
    ]

    if label_noise_ratio > 0:
        flip = torch.rand(labels.shape, device=device) < \
            label_noise_ratio * 0.5
        new_labels = torch.randint(0, num_classes, labels.shape,
                                   device=device)
        # Padded slots keep the padding class: they must stay "nothing".
        labels = torch.where(flip & real, new_labels, labels)

    if box_noise_scale > 0:
        xyxy = bbox_cxcywh_to_xyxy(boxes)
        half_wh = boxes[..., 2:].repeat(1, 1, 2) * 0.5 * box_noise_scale
        sign = torch.randint(0, 2, boxes.shape, device=device) * 2.0 - 1.0
        magnitude = torch.rand(boxes.shape, device=device)
        # Negatives are pushed one to two half sizes away: hard negatives
        # near, but not on, their object.
        magnitude = magnitude + negative[None, :, None].to(magnitude.dtype)
        xyxy = (xyxy + sign * magnitude * half_wh).clamp(0.0, 1.0)
        boxes = bbox_xyxy_to_cxcywh(xyxy)

    return DenoisingQueries(
        query=class_embed(labels),
        ref_logits=inverse_sigmoid(boxes),
        attn_mask=denoising_attn_mask(num_groups, 2 * max_gt, num_queries,
                                      device),
        meta=dict(positive_idx=positive_idx, num_groups=num_groups,
                  split=(num_dn, num_queries)))
