"""Test-only: the official RT-DETR v1 decoder (``RTDETRTransformer`` in
eval mode: query selection, deformable decoder; no denoising) rebuilt from
its facts with its attribute names, for :mod:`rtdetr_reference`. Written
for the tests, not copied."""
from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


# -- RTDETRTransformer (eval) -------------------------------------------------
def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    x = x.clamp(0., 1.)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


class MLP(nn.Module):
    """``layers.{i}`` Linear, ReLU between them."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int,
                 num_layers: int) -> None:
        super().__init__()
        dims = [d_in] + [d_hidden] * (num_layers - 1) + [d_out]
        self.layers = nn.ModuleList(
            [nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:])])

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class MSDeformableAttention(nn.Module):
    """Deformable attention with 4-d references, no residual inside; the
    pure-PyTorch grid_sample form (align_corners False, zero padding)."""

    def __init__(self, embed_dim: int = 256, num_heads: int = 8,
                 num_levels: int = 3, num_points: int = 4) -> None:
        super().__init__()
        self.num_heads, self.num_levels = num_heads, num_levels
        self.num_points = num_points
        total = num_heads * num_levels * num_points
        self.sampling_offsets = nn.Linear(embed_dim, total * 2)
        self.attention_weights = nn.Linear(embed_dim, total)
        self.value_proj = nn.Linear(embed_dim, embed_dim)
        self.output_proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, query: Tensor, ref: Tensor, value: Tensor,
                shapes: List[Tuple[int, int]]) -> Tensor:
        """query [B, Q, C]; ref [B, Q, 1, 4] (cxcywh); value [B, V, C]."""
        b, q, _ = query.shape
        m, lv, p = self.num_heads, self.num_levels, self.num_points
        value = self.value_proj(value).reshape(b, value.shape[1], m, -1)
        offsets = self.sampling_offsets(query).reshape(b, q, m, lv, p, 2)
        weights = self.attention_weights(query).reshape(b, q, m, lv * p)
        weights = weights.softmax(-1).reshape(b, q, m, lv, p)
        loc = ref[:, :, None, :, None, :2] + \
            offsets / p * ref[:, :, None, :, None, 2:] * 0.5
        grids = 2 * loc - 1
        d = value.shape[-1]
        sampled = []
        for level, (v, (h, w)) in enumerate(zip(
                value.split([h * w for h, w in shapes], 1), shapes)):
            v = v.flatten(2).transpose(1, 2).reshape(b * m, d, h, w)
            g = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
            sampled.append(F.grid_sample(v, g, mode='bilinear',
                                         padding_mode='zeros',
                                         align_corners=False))
        weights = weights.transpose(1, 2).reshape(b * m, 1, q, lv * p)
        out = (torch.stack(sampled, -2).flatten(-2) * weights).sum(-1)
        return self.output_proj(out.reshape(b, m * d, q).transpose(1, 2))


class TransformerDecoderLayer(nn.Module):

    def __init__(self, d_model: int = 256, n_head: int = 8,
                 dim_feedforward: int = 1024, n_levels: int = 3,
                 n_points: int = 4) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, n_head, 0.0,
                                               batch_first=True)
        self.norm1 = nn.LayerNorm(d_model)
        self.cross_attn = MSDeformableAttention(d_model, n_head, n_levels,
                                                n_points)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(self, tgt: Tensor, ref: Tensor, memory: Tensor,
                shapes: List[Tuple[int, int]], pos: Tensor) -> Tensor:
        q = k = tgt + pos
        tgt = self.norm1(tgt + self.self_attn(q, k, tgt)[0])
        tgt = self.norm2(tgt + self.cross_attn(tgt + pos, ref, memory,
                                               shapes))
        return self.norm3(tgt + self.linear2(F.relu(self.linear1(tgt))))


class TransformerDecoder(nn.Module):

    def __init__(self, layer: nn.Module, num_layers: int,
                 eval_idx: int = -1) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [copy.deepcopy(layer) for _ in range(num_layers)])
        self.eval_idx = eval_idx if eval_idx >= 0 else num_layers + eval_idx


class RTDETRTransformer(nn.Module):
    """Eval forward only: query selection, then the decoder up to
    ``eval_idx``; returns that layer's ``pred_logits`` / ``pred_boxes``
    and, for checks, the encoder's top-k and every layer's boxes."""

    def __init__(self, num_classes: int = 80, hidden_dim: int = 256,
                 num_queries: int = 300,
                 feat_channels: Sequence[int] = (256, 256, 256),
                 num_levels: int = 3, num_decoder_points: int = 4,
                 nhead: int = 8, num_decoder_layers: int = 3,
                 dim_feedforward: int = 1024, num_denoising: int = 100,
                 eval_idx: int = -1, eps: float = 1e-2) -> None:
        super().__init__()
        self.num_queries, self.eps = num_queries, eps
        self.input_proj = nn.ModuleList([
            nn.Sequential(OrderedDict([
                ('conv', nn.Conv2d(c, hidden_dim, 1, bias=False)),
                ('norm', nn.BatchNorm2d(hidden_dim))]))
            for c in feat_channels])
        layer = TransformerDecoderLayer(hidden_dim, nhead, dim_feedforward,
                                        num_levels, num_decoder_points)
        self.decoder = TransformerDecoder(layer, num_decoder_layers,
                                          eval_idx)
        if num_denoising > 0:
            self.denoising_class_embed = nn.Embedding(
                num_classes + 1, hidden_dim, padding_idx=num_classes)
        self.query_pos_head = MLP(4, 2 * hidden_dim, hidden_dim, 2)
        self.enc_output = nn.Sequential(nn.Linear(hidden_dim, hidden_dim),
                                        nn.LayerNorm(hidden_dim))
        self.enc_score_head = nn.Linear(hidden_dim, num_classes)
        self.enc_bbox_head = MLP(hidden_dim, hidden_dim, 4, 3)
        self.dec_score_head = nn.ModuleList(
            [nn.Linear(hidden_dim, num_classes)
             for _ in range(num_decoder_layers)])
        self.dec_bbox_head = nn.ModuleList(
            [MLP(hidden_dim, hidden_dim, 4, 3)
             for _ in range(num_decoder_layers)])

    def anchors(self, shapes: List[Tuple[int, int]]
                ) -> Tuple[Tensor, Tensor]:
        """Inverse-sigmoid anchors [1, N, 4] (+inf where invalid) and the
        valid mask [1, N, 1]."""
        out = []
        for level, (h, w) in enumerate(shapes):
            gy, gx = torch.meshgrid(torch.arange(h, dtype=torch.float32),
                                    torch.arange(w, dtype=torch.float32),
                                    indexing='ij')
            xy = (torch.stack([gx, gy], -1) + 0.5) / torch.tensor(
                [w, h], dtype=torch.float32)
            wh = torch.full_like(xy, 0.05 * 2.0 ** level)
            out.append(torch.cat([xy, wh], -1).reshape(1, h * w, 4))
        anchors = torch.cat(out, 1)
        valid = ((anchors > self.eps) & (anchors < 1 - self.eps)).all(
            -1, keepdim=True)
        anchors = torch.log(anchors / (1 - anchors))
        return torch.where(valid, anchors, torch.inf), valid

    def forward(self, feats: Sequence[Tensor]) -> Dict[str, Tensor]:
        proj = [p(f) for p, f in zip(self.input_proj, feats)]
        shapes = [tuple(f.shape[2:]) for f in proj]
        memory = torch.cat([f.flatten(2).transpose(1, 2) for f in proj], 1)
        anchors, valid = self.anchors(shapes)
        # The mask only feeds query selection; the decoder's deformable
        # attention reads the unmasked memory.
        out_memory = self.enc_output(valid.to(memory.dtype) * memory)
        enc_logits = self.enc_score_head(out_memory)
        enc_boxes = self.enc_bbox_head(out_memory) + anchors
        topk = enc_logits.max(-1).values.topk(self.num_queries, dim=1)[1]

        def pick(t: Tensor) -> Tensor:
            return t.gather(1, topk[..., None].expand(-1, -1, t.shape[-1]))

        tgt, ref_unact = pick(out_memory), pick(enc_boxes)
        result = dict(enc_logits=pick(enc_logits),
                      enc_boxes=ref_unact.sigmoid(), topk=topk)
        ref = ref_unact.sigmoid()
        boxes = []
        for i, layer in enumerate(self.decoder.layers):
            tgt = layer(tgt, ref[:, :, None], memory, shapes,
                        self.query_pos_head(ref))
            ref = torch.sigmoid(self.dec_bbox_head[i](tgt) +
                                inverse_sigmoid(ref))
            boxes.append(ref)
            if i == self.decoder.eval_idx:
                result.update(pred_logits=self.dec_score_head[i](tgt),
                              pred_boxes=ref)
                break
        result['layer_boxes'] = boxes
        return result
