"""RT-DETR contrastive denoising: groups, layout, mask and noise, by hand."""
import math

import pytest
import torch
from torch import nn

from mmdet.models.layers.transformer import inverse_sigmoid
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy

from mmsparx.models.layers.transformer.denoising import (
    DenoisingQueries, build_contrastive_denoising, denoising_attn_mask)

C = 4  # classes
D = 8  # embedding width


def _embed(seed: int = 0) -> nn.Embedding:
    torch.manual_seed(seed)
    return nn.Embedding(C + 1, D, padding_idx=C)


def _build(gt_labels, gt_boxes, embed=None, num_denoising=100, label=0.0,
           box=0.0, num_queries=5) -> DenoisingQueries:
    return build_contrastive_denoising(
        gt_labels, gt_boxes, embed or _embed(), C, num_queries,
        num_denoising, label, box)


def _labels_of(dn: DenoisingQueries, embed: nn.Embedding) -> torch.Tensor:
    """Recover each slot's class from its embedding row (rows are
    distinct random vectors, the padding row is zero)."""
    dist = torch.cdist(dn.query.detach().reshape(-1, D), embed.weight.detach())
    return dist.argmin(-1).reshape(dn.query.shape[:2])


def _boxes(n: int) -> torch.Tensor:
    return torch.tensor([[0.3 + 0.1 * i, 0.5, 0.2, 0.1] for i in range(n)])


@pytest.mark.parametrize('num_gts,budget,groups', [
    ([3, 0, 5], 100, 20),   # 100 // 5
    ([1], 100, 100),
    ([2, 7], 100, 14),      # 100 // 7
    ([120], 100, 1),        # max(1, 0)
    ([3], 2, 1),
])
def test_group_count(num_gts, budget, groups):
    labels = [torch.zeros(n, dtype=torch.long) for n in num_gts]
    boxes = [_boxes(n) if n else torch.zeros(0, 4) for n in num_gts]
    dn = _build(labels, boxes, num_denoising=budget)
    max_gt = max(num_gts)
    num_dn = 2 * max_gt * groups
    assert dn.meta['num_groups'] == groups
    assert tuple(dn.meta['split']) == (num_dn, 5)
    assert dn.query.shape == (len(num_gts), num_dn, D)
    assert dn.ref_logits.shape == (len(num_gts), num_dn, 4)
    assert dn.attn_mask.shape == (num_dn + 5, num_dn + 5)
    assert dn.attn_mask.dtype == torch.bool


def test_layout_and_positive_idx_without_noise():
    # gts [2, 1, 0], budget 6 -> max_gt 2, 3 groups of [2 pos | 2 neg].
    embed = _embed()
    labels = [torch.tensor([1, 3]), torch.tensor([2]),
              torch.zeros(0, dtype=torch.long)]
    boxes = [_boxes(2), _boxes(1), torch.zeros(0, 4)]
    dn = _build(labels, boxes, embed, num_denoising=6)
    assert dn.meta['num_groups'] == 3 and tuple(dn.meta['split']) == (12, 5)
    expected_idx = [[0, 1, 4, 5, 8, 9], [0, 4, 8], []]
    for got, want in zip(dn.meta['positive_idx'], expected_idx):
        assert got.dtype == torch.long and got.tolist() == want

    # Without noise each group repeats [gts, pad | gts, pad] per image.
    pad = C
    want_labels = torch.tensor([[1, 3, 1, 3] * 3, [2, pad, 2, pad] * 3,
                                [pad] * 12])
    assert torch.equal(_labels_of(dn, embed), want_labels)
    assert torch.equal(dn.query[2], torch.zeros(12, D))  # padding row
    assert torch.allclose(dn.ref_logits[0, 0], inverse_sigmoid(_boxes(1)[0]))
    assert torch.allclose(dn.ref_logits[0, 7], inverse_sigmoid(_boxes(2)[1]))
    assert torch.allclose(dn.ref_logits[1, 4], inverse_sigmoid(_boxes(1)[0]))
    # Padded slots hold box 0, i.e. logit log(1e-5).
    assert torch.allclose(dn.ref_logits[1, 1], torch.full(
        (4,), math.log(1e-5)))
    # The label embedding is trained through the queries.
    assert dn.query.requires_grad


def test_attention_mask_blocks():
    groups, size, nq = 3, 4, 5
    mask = denoising_attn_mask(groups, size, nq)
    nd = groups * size
    assert mask.shape == (nd + nq, nd + nq)
    for g1 in range(groups):
        rows = slice(g1 * size, (g1 + 1) * size)
        for g2 in range(groups):
            cols = slice(g2 * size, (g2 + 1) * size)
            # A group sees only itself among the denoising queries.
            assert bool(mask[rows, cols].all()) == (g1 != g2)
            assert bool(mask[rows, cols].any()) == (g1 != g2)
        # ... and every matching query.
        assert not mask[rows, nd:].any()
    # Matching queries see no denoising query, and every matching query.
    assert mask[nd:, :nd].all()
    assert not mask[nd:, nd:].any()
    # One group: the denoising block is fully visible to itself.
    one = denoising_attn_mask(1, 4, 2)
    assert not one[:4].any() and one[4:, :4].all() and not one[4:, 4:].any()
    assert int(one.sum()) == 8


def test_mask_used_by_builder():
    # 2 gts, budget 8 -> 4 groups of 4.
    dn = _build([torch.tensor([0, 1])], [_boxes(2)], num_denoising=8)
    assert dn.meta['num_groups'] == 4
    assert torch.equal(dn.attn_mask, denoising_attn_mask(4, 4, 5))


def test_label_noise_only_on_real_slots():
    embed = _embed()
    # One image with 50 real gts, one with 10: the second has 40 padded
    # slots per half group.
    labels = [torch.arange(50) % C, torch.arange(10) % C]
    boxes = [torch.rand(50, 4) * 0.3 + 0.3, torch.rand(10, 4) * 0.3 + 0.3]
    torch.manual_seed(0)
    dn = _build(labels, boxes, embed, num_denoising=5000, label=1.0)
    groups = dn.meta['num_groups']
    assert groups == 100
    got = _labels_of(dn, embed)
    clean = torch.full((2, 50), C)
    clean[0] = labels[0]
    clean[1, :10] = labels[1]
    clean = clean.repeat(1, 2 * groups)
    real = clean != C
    # Padded slots keep the padding class, always.
    assert (got[~real] == C).all()
    # Real slots: flipped with probability 0.5 to a uniform class, so the
    # label changes with probability 0.5 * (1 - 1 / C) = 0.375.
    changed = (got[real] != clean[real]).float().mean().item()
    assert abs(changed - 0.375) < 0.02, changed
    assert (got[real] < C).all()
    # Ratio 0: nothing changes.
    dn0 = _build(labels, boxes, embed, num_denoising=5000, label=0.0)
    assert torch.equal(_labels_of(dn0, embed), clean)


def test_box_noise_ranges():
    # Boxes far enough from the border that no noise is clipped:
    # negatives move the edges by less than 2 half sizes (0.1 / 0.05).
    gt = torch.tensor([[0.5, 0.5, 0.2, 0.1], [0.4, 0.6, 0.1, 0.2]])
    torch.manual_seed(1)
    dn = _build([torch.tensor([0, 1])], [gt], num_denoising=400, box=1.0)
    groups = dn.meta['num_groups']
    assert groups == 200
    cxcywh = dn.ref_logits.sigmoid()[0]  # [800, 4]
    noised = bbox_cxcywh_to_xyxy(cxcywh)
    clean = bbox_cxcywh_to_xyxy(gt).repeat(2 * groups, 1)
    half = gt[:, 2:].repeat(1, 2).repeat(2 * groups, 1) * 0.5
    ratio = (noised - clean) / half  # rand * sign, in units of half sizes
    negative = torch.tensor([False, False, True, True]).repeat(groups)
    # A negative whose edges cross (x1 > x2) gets a negative width, which
    # inverse_sigmoid floors at 1e-5 (as officially): only its centre is
    # still exact. Positives never cross (each edge moves < half a size).
    crossed = (cxcywh[:, 2:] < 1e-4).any(-1)
    assert not crossed[~negative].any()
    assert 0 < crossed[negative].float().mean() < 0.5
    keep = negative & ~crossed
    pos, neg = ratio[~negative].abs(), ratio[keep].abs()
    tol = 1e-3  # float32 logit round trip
    assert pos.max() < 1 + tol and pos.min() >= 0
    assert neg.min() > 1 - tol and neg.max() < 2 + tol
    centre_shift = (cxcywh[crossed, :2] - gt[:, :2].repeat(2 * groups, 1)[
        crossed]).abs() / (gt[:, 2:].repeat(2 * groups, 1)[crossed] * 0.5)
    assert centre_shift.max() < 2 + tol
    # Spread over the whole ranges, with both signs.
    assert pos.max() > 0.95 and pos.min() < 0.05
    assert neg.max() > 1.95 and neg.min() < 1.05
    positive_share = (ratio[~crossed] > 0).float().mean().item()
    assert positive_share == pytest.approx(0.5, abs=0.05)
    # Positive idx of a single image: group-major [0, 1, 4, 5, ...].
    assert dn.meta['positive_idx'][0][:4].tolist() == [0, 1, 4, 5]


def test_box_noise_clipped_to_image():
    gt = torch.tensor([[0.02, 0.98, 0.04, 0.04]])  # touching two borders
    torch.manual_seed(2)
    dn = _build([torch.tensor([0])], [gt], num_denoising=200, box=1.0)
    boxes = dn.ref_logits.sigmoid()[0]
    xyxy = bbox_cxcywh_to_xyxy(boxes)
    assert (xyxy >= -1e-5).all() and (xyxy <= 1 + 1e-5).all()
    assert torch.isfinite(dn.ref_logits).all()
    # A clipped negative can collapse to zero width: logit floor log(1e-5).
    assert dn.ref_logits.min() >= math.log(1e-5) - 1e-4


def test_seeded_noise_is_reproducible():
    labels, boxes = [torch.tensor([0, 1, 2])], [_boxes(3)]
    embed = _embed()
    torch.manual_seed(3)
    a = _build(labels, boxes, embed, label=0.5, box=1.0)
    torch.manual_seed(3)
    b = _build(labels, boxes, embed, label=0.5, box=1.0)
    assert torch.equal(a.query, b.query)
    assert torch.equal(a.ref_logits, b.ref_logits)
    c = _build(labels, boxes, embed, label=0.5, box=1.0)
    assert not torch.equal(a.ref_logits, c.ref_logits)


def test_no_gt_or_no_budget_gives_none():
    empty = [torch.zeros(0, dtype=torch.long)] * 2
    assert _build(empty, [torch.zeros(0, 4)] * 2) is None
    assert _build([torch.tensor([1])], [_boxes(1)], num_denoising=0) is None


def test_transformer_make_denoising():
    from mmsparx.models.layers.transformer.rtdetr_transformer import \
        RTDETRTransformer
    kw = dict(num_classes=C, embed_dims=16, in_channels=(16,), num_levels=1,
              num_heads=2, num_layers=1, ffn_dims=16, num_queries=3)
    model = RTDETRTransformer(num_denoising=10, **kw)
    dn = model.make_denoising([torch.tensor([1, 2])], [_boxes(2)])
    assert dn.meta['num_groups'] == 5 and tuple(dn.meta['split']) == (20, 3)
    assert dn.query.shape == (1, 20, 16)
    assert model.make_denoising([torch.zeros(0, dtype=torch.long)],
                                [torch.zeros(0, 4)]) is None
    no_dn = RTDETRTransformer(num_denoising=0, **kw)
    assert not hasattr(no_dn, 'denoising_class_embed')
    assert no_dn.make_denoising([torch.tensor([1])], [_boxes(1)]) is None
