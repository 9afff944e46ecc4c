"""mmpretrain's ImageClassifier with SparseSwin's attention regulariser."""
from __future__ import annotations

from typing import List, Optional, Union

import torch
from mmpretrain.models.classifiers import ImageClassifier
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from torch import nn


class SparseSwinClassifier(ImageClassifier):
    """``ImageClassifier`` whose training loss adds the SparTa attention
    regulariser: loss = head loss + lambda * sum_layers sum(A^p).

    Args:
        backbone, neck, head, pretrained, train_cfg, data_preprocessor,
        init_cfg: as mmpretrain's ``ImageClassifier``.
        attn_reg: the regulariser, e.g. ``dict(type='SparTaAttentionLoss',
            mode='l2', loss_weight=1e-4)``; None leaves the loss as
            ``ImageClassifier``'s. It needs a backbone with
            ``forward_with_attention`` (``SparseSwin``).

    The term is logged as ``loss_attn_reg`` (the loss module's
    ``loss_name``) next to the head's ``loss``.
    """

    def __init__(self, backbone: dict, neck: Optional[dict] = None,
                 head: Optional[dict] = None,
                 attn_reg: Optional[Union[dict, nn.Module]] = None,
                 pretrained: Optional[str] = None,
                 train_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(backbone, neck=neck, head=head,
                         pretrained=pretrained, train_cfg=train_cfg,
                         data_preprocessor=data_preprocessor,
                         init_cfg=init_cfg)
        if isinstance(attn_reg, dict):
            attn_reg = MODELS.build(attn_reg)
        if attn_reg is not None and not hasattr(self.backbone,
                                                'forward_with_attention'):
            raise TypeError(
                f'SparseSwinClassifier: attn_reg needs the SparTa attention '
                f'maps, which {type(self.backbone).__name__} does not give; '
                f"use backbone type='SparseSwin', or attn_reg=None (or "
                f"mmpretrain's ImageClassifier) for other backbones.")
        self.attn_reg = attn_reg

    def loss(self, inputs: torch.Tensor,
             data_samples: List[DataSample]) -> dict:
        if self.attn_reg is None:
            return super().loss(inputs, data_samples)
        feats, maps = self.backbone.forward_with_attention(inputs)
        if self.with_neck:
            feats = self.neck(feats)
        losses = self.head.loss(feats, data_samples)
        name = getattr(self.attn_reg, 'loss_name', 'loss_attn_reg')
        if name in losses:
            raise KeyError(f'SparseSwinClassifier: the head already returns '
                           f'{name!r}; give attn_reg another loss_name')
        losses[name] = self.attn_reg(maps)
        return losses
