"""Whole-model parameters and FLOPs of a config, counted as the papers do.

* Parameters: every parameter of the built model (auxiliary heads too, as
  mmdet's / mmseg's ``get_flops`` report them).
* FLOPs: one multiply-add = one FLOP (mmengine's jit counter, fvcore
  style), the model in eval mode, the selective scan priced by mmsparx's op
  handle, DMCA's two attention products not counted (the SparX paper's
  convention; ``with_attention=True`` adds them). What runs is what the
  toolboxes' complexity tools have always run: mmdet's two-stage
  ``forward_dummy`` (backbone, neck, RPN head, then the box head on 1000
  proposals and the mask head on the first 100), mmseg's ``encode_decode``
  without the auxiliary head, mmpretrain's backbone + neck + head.
* Input: 800x1280 for COCO detectors, 512x2048 for ADE20K segmentors (the
  papers' sizes), the test crop for classifiers.
* RT-DETR is counted as its paper (and the SpaRTAN paper's Table III after
  it) does: at 640x640, two FLOPs per multiply-add (R18vd: 61.2 G); the
  deformable attention's bilinear sampling is not counted (no op handle).
"""
from __future__ import annotations

import os.path as osp
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from mmsparx.apis.model import CONVENTIONS, classifier_input, load_model

PAPER_INPUTS = {'mmdet': (800, 1280), 'mmseg': (512, 2048)}
NUM_PROPOSALS, NUM_MASK_PROPOSALS = 1000, 100


def _proposals(height: int, width: int, count: int) -> Tensor:
    """Fixed boxes (batch index, x1, y1, x2, y2) spread over the image."""
    gen = torch.Generator().manual_seed(0)
    corner = torch.rand(count, 2, generator=gen) * torch.tensor(
        [width * 0.8, height * 0.8])
    size = torch.rand(count, 2, generator=gen) * torch.tensor(
        [width * 0.2, height * 0.2]) + 8
    return torch.cat([torch.zeros(count, 1), corner, corner + size], 1)


class DummyForward(nn.Module):
    """The forward a toolbox's complexity tool runs, as a module to trace."""

    def __init__(self, model: nn.Module, scope: str,
                 size: Tuple[int, int]) -> None:
        super().__init__()
        self.model, self.scope, self.size = model, scope, size

    def forward(self, image: Tensor):
        model = self.model
        if self.scope == 'mmpretrain':
            return model(image, mode='tensor')
        if self.scope == 'mmseg':
            return model.decode_head(model.extract_feat(image))
        if not hasattr(model, 'roi_head'):
            return model._forward(image)
        feats = model.extract_feat(image)
        rpn = model.rpn_head(feats)
        rois = _proposals(*self.size, NUM_PROPOSALS)
        head = model.roi_head
        box = head.bbox_head(head.bbox_roi_extractor(
            feats[:head.bbox_roi_extractor.num_inputs], rois))
        outs = (rpn, box)
        if head.with_mask:
            mask_rois = rois[:NUM_MASK_PROPOSALS]
            outs += (head.mask_head(head.mask_roi_extractor(
                feats[:head.mask_roi_extractor.num_inputs], mask_rois)), )
        return outs


def papers_flops(module: nn.Module, inputs: tuple,
                 with_attention: bool = False) -> int:
    """FLOPs of ``module(*inputs)`` as the papers count them: mmengine's
    jit counter (1 multiply-add = 1 FLOP), without DMCA's attention
    products (its matmuls) unless ``with_attention``. Call it under
    ``torch.no_grad()``."""
    from mmengine.analysis import FlopAnalyzer

    from mmsparx.models.layers import DMCA
    analyzer = FlopAnalyzer(module, inputs)
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    total = analyzer.total()
    if not with_attention:
        by_module = analyzer.by_module_and_operator()
        total -= sum(by_module.get(name, {}).get('matmul', 0)
                     for name, sub in module.named_modules()
                     if isinstance(sub, DMCA))
    return int(total)


def count_config(config: str, size: Optional[Sequence[int]] = None,
                 with_attention: bool = False,
                 flops: bool = True) -> dict:
    """{'params', 'flops', 'input'} of the model a config builds."""
    model, scope, cfg = load_model(config)
    params = sum(p.numel() for p in model.parameters())
    convention = CONVENTIONS.get(type(model).__name__, {})
    if size is None:
        size = (convention.get('input') or PAPER_INPUTS.get(scope)
                or classifier_input(cfg))
    size = (int(size[0]), int(size[1]))
    result = dict(params=params, flops=None, input=list(size))
    if not flops:
        return result
    with torch.no_grad():
        result['flops'] = convention.get('flops_per_mac', 1) * papers_flops(
            DummyForward(model, scope, size), (torch.zeros(1, 3, *size), ),
            with_attention)
    return result


def relative(path: str, root: str) -> str:
    """A config path as the metafiles write it (relative to the root)."""
    return osp.relpath(osp.abspath(path), root).replace(osp.sep, '/')
