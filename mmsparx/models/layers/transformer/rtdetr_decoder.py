"""RT-DETR's decoder: deformable-attention layers with iterative box
refinement (each layer refines the previous layer's box)."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from mmcv.ops import MultiScaleDeformableAttention
from mmdet.models.layers.transformer import inverse_sigmoid
from torch import Tensor, nn


FP16_MAX = torch.finfo(torch.float16).max  # 65504


class RTDETRDecoderLayer(nn.Module):
    """Self-attention, multi-scale deformable cross-attention, FFN; each
    followed by add & LayerNorm (post-norm). Dropout 0 throughout.

    The cross-attention is mmcv's ``MultiScaleDeformableAttention``: with
    4-d reference boxes it samples at ``ref[:2] + offset / num_points *
    ref[2:] * 0.5``, softmaxes over levels x points jointly, uses
    ``grid_sample`` (bilinear, zeros, align_corners=False) on CPU and the
    same sampling in its CUDA kernel, and initialises exactly as the
    official ``MSDeformableAttention`` (grid-initialised offset biases,
    zero attention weights, Xavier-uniform value/output projections). It
    adds its ``identity`` argument itself, which is the residual here.
    Parameter names match the official ones (``self_attn``, ``norm1``,
    ``cross_attn.{sampling_offsets, attention_weights, value_proj,
    output_proj}``, ``norm2``, ``linear1``, ``linear2``, ``norm3``).

    Args:
        embed_dims (int): Query width. Defaults to 256.
        num_heads (int): Heads of both attentions. Defaults to 8.
        ffn_dims (int): FFN hidden width. Defaults to 1024.
        num_levels (int): Feature levels in the memory. Defaults to 3.
        num_points (int): Sampling points per head and level. Defaults to 4.
    """

    def __init__(self, embed_dims: int = 256, num_heads: int = 8,
                 ffn_dims: int = 1024, num_levels: int = 3,
                 num_points: int = 4) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(
            embed_dims, num_heads, dropout=0.0, batch_first=True)
        self.norm1 = nn.LayerNorm(embed_dims)
        self.cross_attn = MultiScaleDeformableAttention(
            embed_dims, num_heads, num_levels, num_points, dropout=0.0,
            batch_first=True)
        self.norm2 = nn.LayerNorm(embed_dims)
        self.linear1 = nn.Linear(embed_dims, ffn_dims)
        self.act = nn.ReLU()
        self.linear2 = nn.Linear(ffn_dims, embed_dims)
        self.norm3 = nn.LayerNorm(embed_dims)

    def ffn_residual(self, x: Tensor) -> Tensor:
        """x + FFN(x), before ``norm3``.

        In float16 the sum is clamped to +-65504: the FFN output can
        overflow to inf under AMP, and LayerNorm turns inf into NaN.
        """
        out = x + self.linear2(self.act(self.linear1(x)))
        if out.dtype == torch.float16:
            out = out.clamp(-FP16_MAX, FP16_MAX)
        return out

    def forward(self, query: Tensor, query_pos: Tensor, ref_boxes: Tensor,
                memory: Tensor, spatial_shapes: Tensor,
                level_start_index: Tensor,
                attn_mask: Optional[Tensor] = None) -> Tensor:
        """Update the queries.

        Args:
            query (Tensor): [B, N, D] content queries.
            query_pos (Tensor): [B, N, D] position embedding, added to the
                self-attention queries/keys and the cross-attention query.
            ref_boxes (Tensor): [B, N, 4] sigmoid cxcywh reference boxes,
                shared by every level.
            memory (Tensor): [B, S, D] flattened multi-level features.
            spatial_shapes (Tensor): [L, 2] long, (H, W) per level.
            level_start_index (Tensor): [L] long.
            attn_mask (Tensor, optional): [N, N] bool, True = blocked.

        Returns:
            Tensor: [B, N, D].
        """
        q = k = query + query_pos
        attended = self.self_attn(q, k, query, attn_mask=attn_mask,
                                  need_weights=False)[0]
        query = self.norm1(query + attended)
        # mmcv's module returns identity + output_proj(...) (dropout 0).
        query = self.norm2(self.cross_attn(
            query, value=memory, identity=query, query_pos=query_pos,
            reference_points=ref_boxes.unsqueeze(2),
            spatial_shapes=spatial_shapes,
            level_start_index=level_start_index))
        return self.norm3(self.ffn_residual(query))


class RTDETRDecoder(nn.Module):
    """Decoder layers with iterative refinement. The heads live on the
    transformer (official key layout) and are passed to :meth:`forward`.

    Args:
        num_layers (int): Number of layers.
        eval_idx (int): Layer whose output is returned in eval (negative
            counts from the end); later layers are skipped. Defaults to -1.
        **layer_kwargs: :class:`RTDETRDecoderLayer` arguments.
    """

    def __init__(self, num_layers: int, eval_idx: int = -1,
                 **layer_kwargs) -> None:
        super().__init__()
        if not -num_layers <= eval_idx < num_layers:
            raise ValueError(f'eval_idx {eval_idx} out of range for '
                             f'{num_layers} layers')
        self.layers = nn.ModuleList(
            RTDETRDecoderLayer(**layer_kwargs) for _ in range(num_layers))
        self.num_layers = num_layers
        self.eval_idx = eval_idx % num_layers

    def forward(self, query: Tensor, ref_logits: Tensor, memory: Tensor,
                spatial_shapes: Tensor, level_start_index: Tensor,
                bbox_heads: Sequence[nn.Module],
                score_heads: Sequence[nn.Module],
                query_pos_head: nn.Module,
                attn_mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Run the layers.

        Args:
            query (Tensor): [B, N, D] initial content queries.
            ref_logits (Tensor): [B, N, 4] initial boxes, inverse sigmoid
                (treated as constants).
            memory, spatial_shapes, level_start_index: see
                :meth:`RTDETRDecoderLayer.forward`.
            bbox_heads, score_heads: one per layer.
            query_pos_head (nn.Module): 4 -> D embedding of the box.
            attn_mask (Tensor, optional): [N, N] bool, True = blocked.

        Returns:
            tuple: boxes [L, B, N, 4] (sigmoid cxcywh), logits [L, B, N, C];
            L = num_layers in training, 1 (layer ``eval_idx``) in eval.
        """
        ref = ref_logits.sigmoid().detach()
        prev_box: Optional[Tensor] = None
        all_boxes, all_logits = [], []
        for i, layer in enumerate(self.layers):
            query = layer(query, query_pos_head(ref), ref, memory,
                          spatial_shapes, level_start_index, attn_mask)
            delta = bbox_heads[i](query)
            box = torch.sigmoid(delta + inverse_sigmoid(ref))
            if self.training:
                all_logits.append(score_heads[i](query))
                # "Look forward twice": the loss on layer i also trains
                # layer i - 1 through its (non-detached) box, while the
                # reference fed to the next layer stays detached.
                all_boxes.append(box if prev_box is None else torch.sigmoid(
                    delta + inverse_sigmoid(prev_box)))
            elif i == self.eval_idx:
                all_logits.append(score_heads[i](query))
                all_boxes.append(box)
                break
            prev_box = box
            ref = box.detach()
        return torch.stack(all_boxes), torch.stack(all_logits)
