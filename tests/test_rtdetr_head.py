"""RTDETRHead: matching, loss sets and normalisation, denoising pairs,
post-processing, empty batches, AMP, and the RTDETR detector end to end."""
import math

import pytest
import torch

pytest.importorskip('mmdet')
pytest.importorskip('mmcv.ops')

import mmsparx  # noqa: E402,F401  registers the lazy mmdet builders
from mmdet.registry import MODELS  # noqa: E402
from mmdet.structures import DetDataSample  # noqa: E402
from mmengine.structures import InstanceData  # noqa: E402

from mmsparx.models.dense_heads import rtdetr_head  # noqa: E402
from mmsparx.models.dense_heads.rtdetr_head import RTDETRHead  # noqa: E402

TINY = dict(embed_dims=32, ffn_dims=64, num_heads=2, num_layers=2,
            num_queries=10, num_denoising=6, in_channels=(32, 32, 32))
SUFFIXES = ('loss_cls', 'loss_bbox', 'loss_iou')


def _head(num_classes=4, **transformer):
    torch.manual_seed(0)
    return RTDETRHead(num_classes=num_classes,
                      transformer=dict(TINY, **transformer))


def _feats(batch=2, channels=32):
    g = torch.Generator().manual_seed(1)
    return [torch.randn(batch, channels, s, s, generator=g)
            for s in (8, 4, 2)]


def _sample(boxes, labels, img_shape=(64, 96), scale_factor=(1.0, 1.0)):
    sample = DetDataSample(metainfo=dict(img_shape=img_shape,
                                         scale_factor=scale_factor))
    sample.gt_instances = InstanceData(
        bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        labels=torch.tensor(labels, dtype=torch.long))
    return sample


def _samples(counts=(2, 1)):
    """Images of 64 x 96 (h x w) with `counts` boxes each (absolute xyxy)."""
    boxes = [[4., 6., 40., 30.], [50., 20., 90., 60.], [10., 30., 30., 62.]]
    return [_sample(boxes[:n], [k % 4 for k in range(n)]) for n in counts]


def _giou(a, b):
    """GIoU of two cxcywh boxes, by hand."""
    ax1, ay1, ax2, ay2 = (a[0] - a[2] / 2, a[1] - a[3] / 2,
                          a[0] + a[2] / 2, a[1] + a[3] / 2)
    bx1, by1, bx2, by2 = (b[0] - b[2] / 2, b[1] - b[3] / 2,
                          b[0] + b[2] / 2, b[1] + b[3] / 2)
    inter = (max(0, min(ax2, bx2) - max(ax1, bx1))
             * max(0, min(ay2, by2) - max(ay1, by1)))
    union = a[2] * a[3] + b[2] * b[3] - inter
    hull = (max(ax2, bx2) - min(ax1, bx1)) * (max(ay2, by2) - min(ay1, by1))
    return inter / union - (hull - union) / hull


# Hand-made outputs: 2 images, 4 queries, 3 classes. Image 0 has one gt
# (label 1), image 1 has two (labels 2, 0). Matched queries sit near their
# gt with a high logit on its class; the others are far, small and unsure.
GT_LABELS = [torch.tensor([1]), torch.tensor([2, 0])]
GT_BOXES = [torch.tensor([[0.30, 0.40, 0.20, 0.30]]),
            torch.tensor([[0.25, 0.25, 0.20, 0.20],
                          [0.70, 0.70, 0.30, 0.30]])]
MATCH = [{2: 0}, {3: 0, 1: 1}]  # per image: query -> gt
OFFSET = torch.tensor([0.01, -0.02, 0.00, 0.01])


def _hand_outputs(num_layers=1):
    logits = torch.full((2, 4, 3), -4.0)
    boxes = torch.tensor([0.05, 0.95, 0.02, 0.02]).repeat(2, 4, 1)
    for b, pairs in enumerate(MATCH):
        for q, g in pairs.items():
            logits[b, q, GT_LABELS[b][g]] = 3.0
            boxes[b, q] = GT_BOXES[b][g] + OFFSET
    return dict(logits=logits.repeat(num_layers, 1, 1, 1).requires_grad_(),
                boxes=boxes.repeat(num_layers, 1, 1, 1).requires_grad_())


@pytest.fixture(scope='module')
def head():
    return _head(num_classes=3)


def test_matcher_picks_the_obvious_queries(head):
    out = _hand_outputs()
    matches = head._match(out['logits'][0], out['boxes'][0], GT_LABELS,
                          GT_BOXES, [(64, 96), (64, 96)])
    for (query, gt), pairs in zip(matches, MATCH):
        assert dict(zip(query.tolist(), gt.tolist())) == pairs


def test_match_cost_is_the_official_cost(head):
    """mmdet's costs on absolute xyxy == 2 focal + 5 L1 + 2 (-GIoU) on
    normalised cxcywh (the official HungarianMatcher)."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 3, generator=g, dtype=torch.float64)
    boxes = torch.rand(5, 4, generator=g, dtype=torch.float64) * 0.5 + 0.2
    gt_boxes, gt_labels = GT_BOXES[1].double(), GT_LABELS[1]
    h, w = 64, 96
    scale = torch.tensor([w, h, w, h], dtype=torch.float64)
    to_xyxy = rtdetr_head.bbox_cxcywh_to_xyxy
    pred = InstanceData(scores=logits, bboxes=to_xyxy(boxes) * scale)
    gt = InstanceData(labels=gt_labels, bboxes=to_xyxy(gt_boxes) * scale)
    cost = sum(c(pred_instances=pred, gt_instances=gt,
                 img_meta=dict(img_shape=(h, w)))
               for c in head.assigner.match_costs)
    for q in range(5):
        for j in range(2):
            p = 1 / (1 + math.exp(-logits[q, gt_labels[j]].item()))
            focal = (0.25 * (1 - p)**2 * -math.log(p + 1e-8)
                     - 0.75 * p**2 * -math.log(1 - p + 1e-8))
            l1 = (boxes[q] - gt_boxes[j]).abs().sum().item()
            giou = _giou(boxes[q].tolist(), gt_boxes[j].tolist())
            assert cost[q, j].item() == pytest.approx(
                2 * focal + 5 * l1 - 2 * giou, abs=1e-6)


def test_losses_normalised_by_num_boxes(head, monkeypatch):
    out = _hand_outputs()
    img_shapes = [(64, 96)] * 2
    losses = head.loss_by_outputs(out, GT_LABELS, GT_BOXES, img_shapes)
    # 3 matched pairs, each off by OFFSET; num_boxes = 3 gts.
    assert losses['loss_bbox'].item() == pytest.approx(
        5 * 3 * OFFSET.abs().sum().item() / 3, rel=1e-5)
    gious = [_giou((GT_BOXES[b][g] + OFFSET).tolist(), GT_BOXES[b][g].tolist())
             for b, pairs in enumerate(MATCH) for g in pairs.values()]
    assert losses['loss_iou'].item() == pytest.approx(
        2 * sum(1 - x for x in gious) / 3, rel=1e-4)
    # Classification: the varifocal sum over all 2 x 4 x 3 logits / 3, with
    # the plain IoU (not GIoU) of each matched box as its target.
    onehot = torch.zeros(2, 4, 3)
    iou = torch.zeros(2, 4)
    for b, pairs in enumerate(MATCH):
        for q, g in pairs.items():
            onehot[b, q, GT_LABELS[b][g]] = 1
            a, t = (GT_BOXES[b][g] + OFFSET).tolist(), GT_BOXES[b][g].tolist()
            inter = ((min(a[0] + a[2] / 2, t[0] + t[2] / 2)
                      - max(a[0] - a[2] / 2, t[0] - t[2] / 2))
                     * (min(a[1] + a[3] / 2, t[1] + t[3] / 2)
                        - max(a[1] - a[3] / 2, t[1] - t[3] / 2)))
            iou[b, q] = inter / (a[2] * a[3] + t[2] * t[3] - inter)
    vfl = head.loss_cls(out['logits'][0].detach().reshape(-1, 3),
                        onehot.reshape(-1, 3), iou.reshape(-1))
    assert losses['loss_cls'].item() == pytest.approx(vfl.item() / 3,
                                                      rel=1e-5)

    # Other ranks: num_boxes is the all-reduced mean (here 6) ...
    monkeypatch.setattr(rtdetr_head, 'reduce_mean', lambda t: t * 2)
    doubled = head.loss_by_outputs(out, GT_LABELS, GT_BOXES, img_shapes)
    for key in SUFFIXES:
        assert doubled[key].item() == pytest.approx(losses[key].item() / 2,
                                                    rel=1e-6)
    # ... clamped at 1 when no rank has ground truth.
    monkeypatch.undo()
    empty = [torch.zeros(0, dtype=torch.long)] * 2
    none = head.loss_by_outputs(out, empty, [torch.zeros(0, 4)] * 2,
                                img_shapes)
    raw = head.loss_cls(out['logits'][0].detach().reshape(-1, 3),
                        torch.zeros(8, 3), torch.zeros(8))
    assert none['loss_cls'].item() == pytest.approx(raw.item(), rel=1e-6)
    assert none['loss_bbox'].item() == 0 and none['loss_iou'].item() == 0


def test_denoising_losses_use_the_fixed_pairs(head):
    """dn outputs equal to the gts at the positive indices give zero L1 and
    GIoU losses, whatever the other denoising slots hold."""
    # max_gt 2, 2 groups of [2 positives | 2 negatives]: Ndn = 8.
    meta = dict(positive_idx=[torch.tensor([0, 4]),
                              torch.tensor([0, 1, 4, 5])],
                num_groups=2, split=(8, 4))
    g = torch.Generator().manual_seed(0)
    dn_boxes = torch.rand(2, 2, 8, 4, generator=g) * 0.5 + 0.2
    for b, pos in enumerate(meta['positive_idx']):
        dn_boxes[:, b, pos] = GT_BOXES[b].repeat(2, 1)
    dn_logits = torch.randn(2, 2, 8, 3, generator=g)
    out = _hand_outputs(num_layers=2)
    out.update(dn_logits=dn_logits, dn_boxes=dn_boxes, dn_meta=meta)
    losses = head.loss_by_outputs(out, GT_LABELS, GT_BOXES, [(64, 96)] * 2)
    expected = {f'{p}{s}' for p in ('d0.', '', 'enc_', 'd0.dn_', 'dn_')
                for s in SUFFIXES} - {f'enc_{s}' for s in SUFFIXES}
    assert set(losses) == expected
    for prefix in ('d0.dn_', 'dn_'):
        assert losses[prefix + 'loss_bbox'].item() == 0
        assert losses[prefix + 'loss_iou'].item() == pytest.approx(0,
                                                                   abs=1e-5)
    # IoU targets are 1 at the positives; normalised by 3 gts x 2 groups.
    onehot = torch.zeros(2, 8, 3)
    iou = torch.zeros(2, 8)
    for b, pos in enumerate(meta['positive_idx']):
        onehot[b, pos, GT_LABELS[b].repeat(2)] = 1
        iou[b, pos] = 1
    vfl = head.loss_cls(dn_logits[1].reshape(-1, 3), onehot.reshape(-1, 3),
                        iou.reshape(-1))
    assert losses['dn_loss_cls'].item() == pytest.approx(vfl.item() / 6,
                                                         rel=1e-5)


def test_predict_topk_labels_and_scaling():
    head = _head(num_classes=2)
    head.max_per_img = 3
    # One image, 3 queries x 2 classes; flat index = query * 2 + class.
    logits = torch.tensor([[[0.0, 2.0], [1.0, -1.0], [3.0, 0.5]]])
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.4], [0.25, 0.5, 0.5, 1.0],
                           [0.1, 0.2, 0.2, 0.2]]])
    meta = dict(img_shape=(100, 200), scale_factor=(2.0, 0.5))
    out = dict(logits=logits[None], boxes=boxes[None])
    for rescale, sx, sy in ((False, 1.0, 1.0), (True, 2.0, 0.5)):
        res = head.predict_by_outputs(out, [meta], rescale=rescale)[0]
        # Sorted: 3.0 (q2, c0), 2.0 (q0, c1), 1.0 (q1, c0).
        assert torch.allclose(res.scores,
                              torch.sigmoid(torch.tensor([3.0, 2.0, 1.0])))
        assert res.labels.tolist() == [0, 1, 0]
        expected = torch.tensor([[0.0, 10.0, 40.0, 30.0],
                                 [80.0, 30.0, 120.0, 70.0],
                                 [0.0, 0.0, 100.0, 100.0]])
        expected /= torch.tensor([sx, sy, sx, sy])
        assert torch.allclose(res.bboxes, expected, atol=1e-4)


def test_loss_keys_of_a_three_layer_model():
    head = _head(num_layers=3)
    head.train()
    losses = head.loss(_feats(), _samples((2, 1)))
    prefixes = ('d0.', 'd1.', '', 'enc_', 'd0.dn_', 'd1.dn_', 'dn_')
    assert set(losses) == {p + s for p in prefixes for s in SUFFIXES}
    assert len(losses) == 21
    assert all(torch.isfinite(v) and v.dtype == torch.float32
               for v in losses.values())
    assert losses['dn_loss_bbox'] > 0


def test_every_head_parameter_gets_a_gradient():
    head = _head()
    head.train()
    n_params = sum(p.numel() for p in head.parameters())
    # By hand (embed 32, ffn 64, 2 heads, 3 levels x 4 points, 4 classes):
    # input_proj 3 x 1,088; per decoder layer 13,096 (self-attn 4,224,
    # deformable attn 4,488, FFN 4,192, 3 norms 192) x 2; label embedding
    # 5 x 32 = 160; query_pos_head 2,400; enc_output 1,120; enc heads
    # 132 + 2,244; per-layer heads 2 x (132 + 2,244).
    assert n_params == (3 * 1088 + 2 * 13096 + 160 + 2400 + 1120 + 132
                        + 2244 + 2 * (132 + 2244)) == 40264
    losses = head.loss(_feats(), _samples((2, 1)))
    sum(losses.values()).backward()
    missing = [n for n, p in head.named_parameters() if p.grad is None]
    assert missing == []
    assert all(torch.isfinite(p.grad).all() for p in head.parameters())


def test_batch_without_ground_truth():
    head = _head()
    head.train()
    losses = head.loss(_feats(), _samples((0, 0)))
    assert len(losses) == 3 * (2 + 1 + 2)
    assert all(torch.isfinite(v) for v in losses.values())
    for key in ('dn_loss_cls', 'd0.dn_loss_bbox', 'loss_bbox', 'loss_iou'):
        assert losses[key].item() == 0
    assert losses['loss_cls'] > 0  # every query is a negative
    sum(losses.values()).backward()
    embed = head.transformer.denoising_class_embed.weight
    # Present (DDP needs it on every rank) but zero.
    assert embed.grad is not None and not embed.grad.any()
    assert [n for n, p in head.named_parameters() if p.grad is None] == []


def test_one_image_without_ground_truth():
    head = _head()
    head.train()
    torch.manual_seed(0)
    losses = head.loss(_feats(), _samples((0, 3)))
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses['dn_loss_bbox'] > 0 and losses['loss_bbox'] > 0


def test_losses_stay_float32_under_autocast():
    head = _head()
    head.train()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = head.transformer(_feats())
        assert out['logits'].dtype == torch.bfloat16  # the test means it
        losses = head.loss(_feats(), _samples((2, 1)))
    assert all(v.dtype == torch.float32 and torch.isfinite(v)
               for v in losses.values())


def test_num_classes_conflict_raises():
    with pytest.raises(ValueError, match='num_classes'):
        RTDETRHead(num_classes=4, transformer=dict(TINY, num_classes=5))


def test_detector_modes():
    from mmengine.registry import DefaultScope
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmdet'):
        _run_detector_modes()


def _run_detector_modes():
    model = MODELS.build(dict(
        type='RTDETR',
        data_preprocessor=dict(type='DetDataPreprocessor', mean=[0, 0, 0],
                               std=[255, 255, 255], bgr_to_rgb=True),
        backbone=dict(type='ResNet', depth=18, out_indices=(1, 2, 3),
                      norm_eval=False),
        neck=dict(type='HybridEncoder', in_channels=(128, 256, 512),
                  hidden_dim=32, num_heads=2, ffn_dim=64, expansion=0.5),
        bbox_head=dict(type='RTDETRHead', num_classes=4,
                       transformer=TINY),
        test_cfg=dict(max_per_img=7)))
    images = [torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8)] * 2
    samples = _samples((2, 1))
    for s in samples:
        s.set_metainfo(dict(batch_input_shape=(64, 96), ori_shape=(64, 96),
                            pad_shape=(64, 96)))
    data = model.data_preprocessor(dict(inputs=images,
                                        data_samples=samples), True)
    model.train()
    losses = model(**data, mode='loss')
    assert len(losses) == 3 * (2 + 1 + 2)
    model.eval()
    with torch.no_grad():
        out = model(**data, mode='tensor')
        assert out['logits'].shape == (1, 2, 10, 4)
        assert out['enc_logits'] is None
        preds = model(**data, mode='predict')
    assert [len(p.pred_instances) for p in preds] == [7, 7]
    assert preds[0].pred_instances.bboxes.shape == (7, 4)
