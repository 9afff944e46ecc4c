"""RT-DETR's IoU-aware classification loss (the official ``loss_labels_vfl``).

mmdet's ``VarifocalLoss`` is not a drop-in replacement: it keeps the
sigmoid in the weight differentiable, and a matched class whose box IoU is
0 gets the negative weight ``alpha * p^gamma`` there but weight 0 here.
"""
from typing import Optional, Union

import torch.nn.functional as F
from torch import Tensor, nn


class RTDETRVarifocalLoss(nn.Module):
    """Varifocal loss with a detached IoU target and a detached weight.

    With ``onehot`` the matched class of each query (all zero for unmatched
    queries) and ``score = onehot * iou``::

        weight = alpha * sigmoid(logits).detach() ** gamma * (1 - onehot)
                 + score
        loss = sum(BCE_with_logits(logits, score) * weight)

    summed over queries and classes. The caller normalises by the number of
    ground-truth boxes (``avg_factor``, the official ``num_boxes``), not by
    the number of queries.

    Args:
        alpha: weight of the negatives. Defaults to 0.75.
        gamma: focusing exponent on the negatives' probability.
            Defaults to 2.0.
        loss_weight: multiplies the loss. Defaults to 1.0.
    """

    def __init__(self, alpha: float = 0.75, gamma: float = 2.0,
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        self.alpha = alpha
        self.gamma = gamma
        self.loss_weight = loss_weight

    def forward(self, logits: Tensor, target_onehot: Tensor, iou: Tensor,
                avg_factor: Optional[Union[float, Tensor]] = None) -> Tensor:
        """Compute the loss.

        Args:
            logits: [N, C] classification logits.
            target_onehot: [N, C] (float or bool) one-hot matched class; a
                row of zeros for an unmatched query.
            iou: [N] IoU of each query's box with its matched ground truth
                (0 for unmatched queries). Used as a target only: detached.
            avg_factor: divides the summed loss (``num_boxes``); None
                returns the plain sum.

        Returns:
            The scalar loss, times ``loss_weight``.
        """
        onehot = target_onehot.to(logits.dtype)
        score = onehot * iou.detach().to(logits.dtype).unsqueeze(-1)
        # The official weight is built from a detached probability: the
        # modulating factor scales the gradient but is not trained itself.
        prob = logits.detach().sigmoid()
        weight = self.alpha * prob.pow(self.gamma) * (1 - onehot) + score
        loss = F.binary_cross_entropy_with_logits(
            logits, score, weight=weight, reduction='sum')
        if avg_factor is not None:
            loss = loss / avg_factor
        return loss * self.loss_weight

    def extra_repr(self) -> str:
        return (f'alpha={self.alpha}, gamma={self.gamma}, '
                f'loss_weight={self.loss_weight}')
