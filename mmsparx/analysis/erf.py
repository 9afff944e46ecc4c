"""Effective receptive field (ERF, Luo et al. 2016) as RepLKNet and the
SparX paper draw it: how much each input pixel moves the centre of a
stage's output map, averaged over images.

For each image the centre position of an output map (``h // 2, w // 2``) is
taken, its channels passed through a ReLU and summed, that score
back-propagated to the (normalised) input, and the gradient's magnitude
summed over the input channels. The maps of all images are averaged;
:func:`log_normalise` then gives the picture (``log10(1 + x)``, scaled to a
maximum of 1) and :func:`area_fractions` the number quoted beside it: the
share of the input area, in the smallest centred square, that holds a given
share of the total contribution.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np
import torch
from torch import Tensor, nn

# The shares of the total contribution RepLKNet reports the area for.
THRESHOLDS = (0.2, 0.3, 0.5, 0.99)
GRADIENTS = ('abs', 'relu')


class ERFInputError(ValueError):
    """An input the ERF tool cannot measure (an unknown backbone, a stage it
    does not have, an empty image folder): one paragraph naming the fix."""


def _outputs(model: nn.Module, images: Tensor) -> tuple:
    out = model(images)
    return (out, ) if isinstance(out, Tensor) else tuple(out)


def centre_score(feature: Tensor) -> Tensor:
    """The centre position's channels, ReLU'd and summed over the batch.

    The ReLU (RepLKNet's choice) matters for maps normalised per position:
    a LayerNorm output without affine sums to zero over its channels at
    every position, so the plain channel sum would have no gradient."""
    if feature.dim() != 4:
        raise ERFInputError(
            f'the measured output has shape {tuple(feature.shape)}, not '
            '(N, C, H, W): an ERF needs a spatial map. Measure a stage that '
            'returns one (for SparseSwin use SparseSwinDense, whose outputs '
            'are maps).')
    h, w = feature.shape[-2:]
    return feature[:, :, h // 2, w // 2].relu().sum()


def erf_maps(model: nn.Module, images: Tensor,
             outputs: Sequence[int] = (-1, ), batch_size: int = 1,
             gradient: str = 'abs') -> List[np.ndarray]:
    """The mean contribution map (H, W) of each of ``model``'s ``outputs``.

    Args:
        model: returns a tensor or a tuple of (N, C, h, w) maps; put in
            eval mode here (no dropout or drop path, frozen BatchNorm), so
            the images of a batch do not interact.
        images: (N, 3, H, W), normalised as the model expects.
        outputs: positions in the model's output tuple to measure.
        batch_size: images per forward pass (the result does not depend on
            it).
        gradient: 'abs' (the gradient's magnitude, Luo et al.) or 'relu'
            (only the positive part, as RepLKNet's script).

    Returns:
        One float64 array of shape (H, W) per entry of ``outputs``:
        non-negative, the mean over images of the gradient summed over the
        input channels.

    Raises:
        ERFInputError: an output is not a map, or no image moved it.
        FloatingPointError: the gradient is not finite.
    """
    if gradient not in GRADIENTS:
        raise ERFInputError(f'gradient must be one of {GRADIENTS}, got '
                            f'{gradient!r}')
    if images.dim() != 4 or images.shape[0] == 0:
        raise ERFInputError(f'images must be (N, 3, H, W) with N >= 1, got '
                            f'{tuple(images.shape)}')
    model.eval()
    height, width = images.shape[-2:]
    totals = [torch.zeros(height, width, dtype=torch.float64)
              for _ in outputs]
    for batch in images.split(max(1, batch_size)):
        batch = batch.detach().clone().requires_grad_(True)
        feats = _outputs(model, batch)
        scores = [centre_score(feats[i]) for i in outputs]
        for k, score in enumerate(scores):
            grad, = torch.autograd.grad(score, batch,
                                        retain_graph=k < len(scores) - 1)
            grad = grad.abs() if gradient == 'abs' else grad.relu()
            totals[k] += grad.sum(dim=(0, 1)).double().cpu()
    maps = []
    for index, total in zip(outputs, totals):
        if not torch.isfinite(total).all():
            raise FloatingPointError(
                f'output {index}: the input gradient is not finite (NaN or '
                'inf); check the weights and the images')
        if not total.any():
            raise ERFInputError(
                f'output {index}: no image moved the centre of the map (its '
                'channels are all <= 0 there, or it does not depend on the '
                'input); use more or other images.')
        maps.append((total / images.shape[0]).numpy())
    return maps


def log_normalise(erf: np.ndarray) -> np.ndarray:
    """``log10(1 + x)`` scaled to a maximum of 1: RepLKNet's picture, where
    contributions that differ by orders of magnitude stay visible and
    models compare on one colour scale."""
    scaled = np.log10(1.0 + np.asarray(erf, dtype=np.float64))
    peak = scaled.max()
    if not peak > 0:
        raise ERFInputError('the ERF map is zero everywhere: nothing to '
                            'normalise')
    return scaled / peak


def centred_shares(erf: np.ndarray) -> List[tuple]:
    """(side length of the window, its area fraction, its share of the
    total) for centred square windows of radius 0, 1, ... until the window
    covers the map (clipped at the border)."""
    erf = np.asarray(erf, dtype=np.float64)
    height, width = erf.shape
    cy, cx = height // 2, width // 2
    total = erf.sum()
    rows = []
    for radius in range(max(height, width)):
        window = erf[max(cy - radius, 0):cy + radius + 1,
                     max(cx - radius, 0):cx + radius + 1]
        rows.append((2 * radius + 1, window.size / erf.size,
                     window.sum() / total))
        if window.size == erf.size:
            break
    return rows


def area_fractions(erf: np.ndarray, thresholds: Sequence[float] = THRESHOLDS
                   ) -> Dict[float, float]:
    """``{t: area}``: the fraction of the input area taken by the smallest
    centred square that holds at least the share ``t`` of the map's total
    (RepLKNet's "high-contribution area ratio"; give it the
    :func:`log_normalise` map to report the numbers it reports)."""
    if np.asarray(erf).sum() <= 0:
        raise ERFInputError('the ERF map sums to zero: no area holds a '
                            'share of it')
    rows = centred_shares(erf)
    fractions = {}
    for threshold in thresholds:
        if not 0 < threshold <= 1:
            raise ERFInputError(f'thresholds are shares in (0, 1], got '
                                f'{threshold}')
        # A float sum of the whole map may fall short of 1 by rounding.
        fractions[threshold] = next(
            (area for _, area, share in rows if share >= threshold - 1e-12),
            1.0)
    return fractions
