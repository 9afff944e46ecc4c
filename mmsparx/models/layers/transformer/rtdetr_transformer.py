"""RT-DETR's transformer (the official ``RTDETRTransformer``, their
``decoder.`` prefix): input projection, IoU-aware query selection over
anchors, contrastive denoising and the refining decoder.

Attribute names are the official ones, so an official state dict under
``decoder.`` loads here with the prefix stripped.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from mmsparx.models.layers.transformer.anchors import AnchorCache
from mmsparx.models.layers.transformer.denoising import (
    DenoisingQueries, build_contrastive_denoising)
from mmsparx.models.layers.transformer.mlp import MLP
from mmsparx.models.layers.transformer.rtdetr_decoder import RTDETRDecoder


def _gather_tokens(x: Tensor, index: Tensor) -> Tensor:
    """x [B, S, C], index [B, K] -> [B, K, C]."""
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class RTDETRTransformer(nn.Module):
    """Query selection + denoising + deformable decoder of RT-DETR.

    Args:
        num_classes (int): Classes (sigmoid, no background). Defaults to 80.
        embed_dims (int): Width of memory and queries. Defaults to 256.
        in_channels (Sequence[int]): Channels of the input levels.
        num_levels (int): Memory levels; levels beyond ``in_channels`` are
            made by stride-2 3x3 conv + BN from the last one (official).
        num_points (int): Deformable sampling points. Defaults to 4.
        num_heads (int): Attention heads. Defaults to 8.
        num_layers (int): Decoder layers (3 for R18, 4 for R34, 6 for R50).
        ffn_dims (int): Decoder FFN width. Defaults to 1024.
        num_queries (int): Selected queries. Defaults to 300.
        num_denoising (int): Denoising query budget (0 disables it).
        label_noise_ratio (float): Denoising label noise. Defaults to 0.5.
        box_noise_scale (float): Denoising box noise. Defaults to 1.0.
        eval_idx (int): Decoder layer used in eval. Defaults to -1.
        anchor_grid_size (float): Anchor size at level 0. Defaults to 0.05.
        anchor_eps (float): Anchors within eps of the border are invalid.
    """

    def __init__(self, num_classes: int = 80, embed_dims: int = 256,
                 in_channels: Sequence[int] = (256, 256, 256),
                 num_levels: int = 3, num_points: int = 4,
                 num_heads: int = 8, num_layers: int = 3,
                 ffn_dims: int = 1024, num_queries: int = 300,
                 num_denoising: int = 100, label_noise_ratio: float = 0.5,
                 box_noise_scale: float = 1.0, eval_idx: int = -1,
                 anchor_grid_size: float = 0.05,
                 anchor_eps: float = 0.01) -> None:
        super().__init__()
        if len(in_channels) > num_levels:
            raise ValueError(f'{len(in_channels)} input levels but '
                             f'num_levels={num_levels}')
        self.num_classes = num_classes
        self.embed_dims = embed_dims
        self.num_levels = num_levels
        self.num_inputs = len(in_channels)
        self.num_queries = num_queries
        self.num_denoising = num_denoising
        self.label_noise_ratio = label_noise_ratio
        self.box_noise_scale = box_noise_scale

        self.input_proj = nn.ModuleList(
            self._conv_bn(c, embed_dims, 1, 1) for c in in_channels)
        extra_in = in_channels[-1]
        for _ in range(num_levels - len(in_channels)):
            self.input_proj.append(self._conv_bn(extra_in, embed_dims, 3, 2))
            extra_in = embed_dims

        self.decoder = RTDETRDecoder(
            num_layers, eval_idx, embed_dims=embed_dims, num_heads=num_heads,
            ffn_dims=ffn_dims, num_levels=num_levels, num_points=num_points)
        if num_denoising > 0:
            # The extra row is the padding class of padded denoising slots.
            self.denoising_class_embed = nn.Embedding(
                num_classes + 1, embed_dims, padding_idx=num_classes)
        self.query_pos_head = MLP(4, 2 * embed_dims, embed_dims, 2)

        self.enc_output = nn.Sequential(
            nn.Linear(embed_dims, embed_dims), nn.LayerNorm(embed_dims))
        self.enc_score_head = nn.Linear(embed_dims, num_classes)
        self.enc_bbox_head = MLP(embed_dims, embed_dims, 4, 3)
        self.dec_score_head = nn.ModuleList(
            nn.Linear(embed_dims, num_classes) for _ in range(num_layers))
        self.dec_bbox_head = nn.ModuleList(
            MLP(embed_dims, embed_dims, 4, 3) for _ in range(num_layers))

        self.anchors = AnchorCache(anchor_grid_size, anchor_eps)
        self.init_weights()

    @staticmethod
    def _conv_bn(in_channels: int, out_channels: int, kernel: int,
                 stride: int) -> nn.Sequential:
        # PyTorch's default conv init (not mmcv's Kaiming-normal), as the
        # official model: the mmdet port only matched its AP after this.
        return nn.Sequential(OrderedDict(
            conv=nn.Conv2d(in_channels, out_channels, kernel, stride,
                           padding=kernel // 2, bias=False),
            norm=nn.BatchNorm2d(out_channels)))

    def init_weights(self) -> None:
        """(Re)apply RT-DETR's init (mmengine calls this on children)."""
        # Prior 0.01 on every class logit: focal/varifocal-style training
        # starts with (almost) all queries as background.
        bias = -math.log((1 - 0.01) / 0.01)
        for score_head in [self.enc_score_head, *self.dec_score_head]:
            nn.init.constant_(score_head.bias, bias)
        # Zero last box layers: the first boxes are exactly the anchors /
        # the incoming references.
        for bbox_head in [self.enc_bbox_head, *self.dec_bbox_head]:
            nn.init.zeros_(bbox_head.layers[-1].weight)
            nn.init.zeros_(bbox_head.layers[-1].bias)
        nn.init.xavier_uniform_(self.enc_output[0].weight)
        for layer in self.query_pos_head.layers:
            nn.init.xavier_uniform_(layer.weight)
        for layer in self.decoder.layers:
            layer.cross_attn.init_weights()

    def make_denoising(self, gt_labels: List[Tensor],
                       gt_boxes: List[Tensor]) -> Optional[DenoisingQueries]:
        """Denoising queries for a training batch.

        Args:
            gt_labels (list[Tensor]): Per image [n_i] int64 in
                [0, num_classes).
            gt_boxes (list[Tensor]): Per image [n_i, 4] normalised cxcywh.

        Returns:
            DenoisingQueries or None: None when the batch holds no ground
            truth or ``num_denoising == 0``.
        """
        if self.num_denoising <= 0:
            return None
        return build_contrastive_denoising(
            gt_labels, gt_boxes, self.denoising_class_embed,
            self.num_classes, self.num_queries, self.num_denoising,
            self.label_noise_ratio, self.box_noise_scale)

    def _flatten_memory(self, feats: Sequence[Tensor]
                        ) -> Tuple[Tensor, List[Tuple[int, int]]]:
        """Project every level and flatten: [B, sum H_l W_l, D] (no level
        embedding, no position encoding: the official memory)."""
        if len(feats) != self.num_inputs:
            raise ValueError(f'expected {self.num_inputs} feature levels, '
                             f'got {len(feats)}')
        projected = [proj(f) for proj, f in zip(self.input_proj, feats)]
        for k in range(len(feats), self.num_levels):
            source = feats[-1] if k == len(feats) else projected[-1]
            projected.append(self.input_proj[k](source))
        shapes = [(p.shape[2], p.shape[3]) for p in projected]
        memory = torch.cat([p.flatten(2).transpose(1, 2) for p in projected],
                           1)
        return memory, shapes

    def _select_queries(self, memory: Tensor, shapes: Sequence[Tuple[int, int]]
                        ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """IoU-aware query selection from the memory tokens.

        Returns:
            tuple: content [B, Nq, D] (detached), ref_logits [B, Nq, 4]
            (detached), enc_logits [B, Nq, C], enc_boxes [B, Nq, 4].
        """
        anchors, valid = self.anchors(shapes, memory.device, torch.float32)
        # Border tokens are zeroed here only; the decoder reads them as
        # they are.
        output_memory = self.enc_output(valid.to(memory.dtype) * memory)
        logits = self.enc_score_head(output_memory)
        box_logits = self.enc_bbox_head(output_memory) + anchors
        topk = logits.max(-1).values.topk(self.num_queries, dim=1).indices
        ref_logits = _gather_tokens(box_logits, topk)
        # Queries are picked, not produced: the decoder loss must not move
        # the encoder through them (only the encoder's own top-k loss does).
        content = _gather_tokens(output_memory, topk).detach()
        return (content, ref_logits.detach(), _gather_tokens(logits, topk),
                ref_logits.sigmoid())

    def forward(self, feats: Sequence[Tensor],
                dn: Optional[DenoisingQueries] = None) -> dict:
        """Decode.

        Args:
            feats (Sequence[Tensor]): Per level [B, in_channels[l], H_l,
                W_l] (the hybrid encoder's outputs).
            dn (DenoisingQueries, optional): From :meth:`make_denoising`.

        Returns:
            dict: ``logits`` [L, B, Nq, C], ``boxes`` [L, B, Nq, 4] (sigmoid
            cxcywh; L = num_layers in training, 1 in eval); ``enc_logits``
            [B, Nq, C] and ``enc_boxes`` [B, Nq, 4] (None in eval);
            ``dn_logits`` [L, B, Ndn, C], ``dn_boxes`` [L, B, Ndn, 4] and
            ``dn_meta`` (None without ``dn``).
        """
        memory, shapes = self._flatten_memory(feats)
        content, ref_logits, enc_logits, enc_boxes = self._select_queries(
            memory, shapes)
        attn_mask = None
        if dn is not None:
            content = torch.cat([dn.query.to(content.dtype), content], 1)
            ref_logits = torch.cat([dn.ref_logits.to(ref_logits.dtype),
                                    ref_logits], 1)
            attn_mask = dn.attn_mask

        spatial_shapes = torch.as_tensor(shapes, dtype=torch.long,
                                         device=memory.device)
        level_start_index = torch.cat([
            spatial_shapes.new_zeros(1),
            spatial_shapes.prod(1).cumsum(0)[:-1]])
        boxes, logits = self.decoder(
            content, ref_logits, memory, spatial_shapes, level_start_index,
            self.dec_bbox_head, self.dec_score_head, self.query_pos_head,
            attn_mask)

        out = dict(logits=logits, boxes=boxes, enc_logits=None,
                   enc_boxes=None, dn_logits=None, dn_boxes=None,
                   dn_meta=None)
        if dn is not None:
            split = list(dn.meta['split'])
            out['dn_boxes'], out['boxes'] = boxes.split(split, dim=2)
            out['dn_logits'], out['logits'] = logits.split(split, dim=2)
            out['dn_meta'] = dn.meta
        elif self.training and self.num_denoising > 0:
            # A rank without ground truth must still use the label
            # embedding, or DDP waits forever for its gradient.
            out['logits'] = logits + \
                0.0 * self.denoising_class_embed.weight.sum()
        if self.training:
            out['enc_logits'], out['enc_boxes'] = enc_logits, enc_boxes
        return out
