"""SparseSwin's attention regulariser: L1 or L2 on the SparTa attention maps.

The paper regularises the attention weights "to prevent the model from
overfitting" and the authors' training loop adds
``lambda * sum_layers sum(|A|)`` (L1) or ``sum(A ** 2)`` (L2) to the
cross-entropy, summed over every element of the maps, the batch included
(the authors' code).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

MODES = ('l1', 'l2')
REDUCTIONS = ('sum', 'batch_mean')


def attention_penalty(maps: Sequence[Tensor], mode: str = 'l2',
                      reduction: str = 'sum') -> Tensor:
    """sum over ``maps`` (each (B, heads, t, t)) of sum |A| or sum A^2.

    ``reduction='sum'`` sums the batch too (the authors'); ``'batch_mean'``
    divides by B, so lambda does not have to change with the batch size.
    """
    if mode not in MODES:
        raise ValueError(f'attention penalty mode must be one of {MODES}, '
                         f'got {mode!r}')
    if reduction not in REDUCTIONS:
        raise ValueError(f'attention penalty reduction must be one of '
                         f'{REDUCTIONS}, got {reduction!r}')
    if not maps:
        raise ValueError('no attention maps to regularise: the backbone '
                         'returned none (is it a SparseSwin?)')
    total = maps[0].new_zeros(())
    for attn in maps:
        term = attn.abs().sum() if mode == 'l1' else attn.pow(2).sum()
        total = total + (term / attn.shape[0] if reduction == 'batch_mean'
                         else term)
    return total


class SparTaAttentionLoss(nn.Module):
    """``loss_weight`` (lambda) x :func:`attention_penalty` of the SparTa
    attention maps, as a loss term (``loss_name`` in the loss dict).

    The paper uses lambda 1e-4 or 1e-5 with either mode. With softmax
    attention the L1 term is a constant: every row of A sums to 1, so
    sum |A| = B * heads * t per layer, and its gradient is zero. It is kept
    for fidelity (and logs 0 change to training); L2 is the one that acts.

    Args:
        mode: 'l1' or 'l2'.
        loss_weight: lambda; 0 gives an exact zero term.
        reduction: 'sum' (the authors') or 'batch_mean'.
        loss_name: key of the term in the loss dict (``loss_`` prefix so
            mmengine adds it to the total).
    """

    def __init__(self, mode: str = 'l2', loss_weight: float = 1e-4,
                 reduction: str = 'sum', loss_name: str = 'loss_attn_reg'):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f'SparTaAttentionLoss: mode must be one of '
                             f'{MODES}, got {mode!r}')
        if reduction not in REDUCTIONS:
            raise ValueError(f'SparTaAttentionLoss: reduction must be one of '
                             f'{REDUCTIONS}, got {reduction!r}')
        if loss_weight < 0:
            raise ValueError(f'SparTaAttentionLoss: loss_weight must be >= 0,'
                             f' got {loss_weight}')
        if not loss_name.startswith('loss'):
            raise ValueError(f"SparTaAttentionLoss: loss_name must start "
                             f"with 'loss' for mmengine to add it to the "
                             f"total, got {loss_name!r}")
        self.mode = mode
        self.loss_weight = float(loss_weight)
        self.reduction = reduction
        self.loss_name = loss_name
        if mode == 'l1' and loss_weight > 0:
            from mmengine.logging import print_log
            print_log('SparTaAttentionLoss: L1 on softmax attention is the '
                      'constant B*heads*tokens per layer; it has no '
                      "gradient. Use mode='l2' to regularise.",
                      logger='current', level=30)

    def forward(self, maps: Sequence[Tensor]) -> Tensor:
        if self.loss_weight == 0:
            return maps[0].new_zeros(()) if maps else torch.zeros(())
        return self.loss_weight * attention_penalty(maps, self.mode,
                                                    self.reduction)

    def extra_repr(self) -> str:
        return (f'mode={self.mode!r}, loss_weight={self.loss_weight}, '
                f'reduction={self.reduction!r}')
