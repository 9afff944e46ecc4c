"""RTDETRVarifocalLoss against hand computations (official loss_labels_vfl)."""
import math

import pytest
import torch

pytest.importorskip('mmdet')

from mmsparx.models.losses.varifocal_loss import \
    RTDETRVarifocalLoss  # noqa: E402

LOGITS = [[0.0, 1.0, -1.0], [2.0, -2.0, 0.5]]
ONEHOT = [[0, 1, 0], [0, 0, 0]]  # query 0 matched to class 1, query 1 not
IOU = [0.6, 0.0]


def _sigmoid(v):
    return 1 / (1 + math.exp(-v))


def _hand_loss_and_grad(alpha=0.75, gamma=2.0):
    """Element-wise BCE times the (constant) varifocal weight, and its
    derivative weight * (p - target)."""
    total, grad = 0.0, []
    for row, hot, iou in zip(LOGITS, ONEHOT, IOU):
        grad_row = []
        for x, h in zip(row, hot):
            p = _sigmoid(x)
            t = h * iou
            w = alpha * p**gamma * (1 - h) + t
            total += -(t * math.log(p) + (1 - t) * math.log(1 - p)) * w
            grad_row.append(w * (p - t))
        grad.append(grad_row)
    return total, grad


def test_value_matches_hand_computation():
    loss_fn = RTDETRVarifocalLoss(alpha=0.75, gamma=2.0, loss_weight=1.0)
    logits = torch.tensor(LOGITS, dtype=torch.float64)
    expected, _ = _hand_loss_and_grad()
    assert expected == pytest.approx(2.0968856593343173, abs=1e-12)
    for onehot in (torch.tensor(ONEHOT, dtype=torch.float64),
                   torch.tensor(ONEHOT, dtype=torch.bool)):
        loss = loss_fn(logits, onehot, torch.tensor(IOU, dtype=torch.float64))
        assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_avg_factor_and_loss_weight():
    loss_fn = RTDETRVarifocalLoss(loss_weight=3.0)
    args = (torch.tensor(LOGITS), torch.tensor(ONEHOT), torch.tensor(IOU))
    expected, _ = _hand_loss_and_grad()
    assert loss_fn(*args).item() == pytest.approx(3 * expected, rel=1e-6)
    # The caller divides by num_boxes (4 here), not by the query count.
    assert loss_fn(*args, avg_factor=4).item() == pytest.approx(
        3 * expected / 4, rel=1e-6)


def test_iou_target_and_weight_are_detached():
    loss_fn = RTDETRVarifocalLoss()
    logits = torch.tensor(LOGITS, dtype=torch.float64, requires_grad=True)
    iou = torch.tensor(IOU, dtype=torch.float64, requires_grad=True)
    scale = torch.ones((), dtype=torch.float64, requires_grad=True)
    # iou * scale keeps a graph to `scale`: it must stay unused.
    loss = loss_fn(logits, torch.tensor(ONEHOT), iou * scale)
    loss.backward()
    assert iou.grad is None and scale.grad is None
    # d loss / d x = w * (p - t) with w constant: the sigmoid inside the
    # weight gets no gradient (it would add terms otherwise).
    _, grad = _hand_loss_and_grad()
    assert torch.allclose(logits.grad,
                          torch.tensor(grad, dtype=torch.float64),
                          atol=1e-12)


def test_differs_from_mmdet_varifocal():
    from mmdet.models.losses import VarifocalLoss
    ours = RTDETRVarifocalLoss()
    theirs = VarifocalLoss(alpha=0.75, gamma=2.0, iou_weighted=True,
                           reduction='sum')
    onehot = torch.tensor(ONEHOT, dtype=torch.float64)

    # Matched class with a positive IoU: same value, different gradient
    # (mmdet differentiates through sigmoid(x)^gamma in the weight).
    iou = torch.tensor(IOU, dtype=torch.float64)
    x1 = torch.tensor(LOGITS, dtype=torch.float64, requires_grad=True)
    x2 = torch.tensor(LOGITS, dtype=torch.float64, requires_grad=True)
    a, b = ours(x1, onehot, iou), theirs(x2, onehot * iou[:, None])
    assert a.item() == pytest.approx(b.item(), rel=1e-12)
    a.backward()
    b.backward()
    # query 1, class 0 (x = 2, a negative): ours w * p = 0.75 p^3, mmdet
    # adds d(0.75 p^2)/dx * BCE = 1.5 p^2 (1 - p) * -log(1 - p).
    p = _sigmoid(2.0)
    assert x1.grad[1, 0].item() == pytest.approx(0.75 * p**3, rel=1e-10)
    assert x2.grad[1, 0].item() == pytest.approx(
        0.75 * p**3 - 1.5 * p**2 * (1 - p) * math.log(1 - p), rel=1e-10)

    # Matched class with IoU 0 (a matched box not overlapping its gt):
    # officially weight 0, mmdet treats it as a negative, alpha * p^gamma.
    iou0 = torch.tensor([0.0, 0.0], dtype=torch.float64)
    x = torch.tensor(LOGITS, dtype=torch.float64)
    diff = theirs(x, onehot * 0) - ours(x, onehot, iou0)
    p1 = _sigmoid(1.0)
    assert diff.item() == pytest.approx(
        0.75 * p1**2 * -math.log(1 - p1), rel=1e-10)


def test_built_from_mmdet_registry():
    import mmsparx  # noqa: F401  registers the lazy builders
    from mmdet.registry import MODELS
    loss = MODELS.build(dict(type='RTDETRVarifocalLoss', alpha=0.5,
                             gamma=1.0, loss_weight=2.0))
    assert isinstance(loss, RTDETRVarifocalLoss)
    assert (loss.alpha, loss.gamma, loss.loss_weight) == (0.5, 1.0, 2.0)
