"""Inputs to check an export with, and how ONNX Runtime's outputs are held
against PyTorch's (``export_onnx.py --check`` and the tests)."""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

# The bounds an export must meet.
DENSE_RTOL = 1e-4   # logits / maps: max |diff| over the reference's range
SCORE_ATOL = 1e-4   # RT-DETR scores
BOX_ATOL_PX = 1e-3  # RT-DETR boxes, original pixels


def sample_images(batch: int, height: int, width: int,
                  seed: int = 0) -> np.ndarray:
    """Real-looking RGB images [N, H, W, 3] uint8: the generated data sets'
    noisy gradients with filled shapes, so features and scores are spread
    as on photographs rather than on noise."""
    from mmsparx.datasets.shapes import (Shape, draw, hue_color,
                                         place_shapes, polygon_of)
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(batch):
        shapes = [Shape(kind, polygon_of(kind, *pose), hue_color(
            float(rng.uniform()), rng))
            for kind, *pose in place_shapes(height, width, rng,
                                            max_objects=4)]
        image, _ = draw(height, width, shapes, rng)
        images.append(np.asarray(image))
    return np.stack(images)


def _mean_std(model: nn.Module):
    """The data preprocessor's (mean, std) [3] tensors, or None where it
    does not normalise."""
    pre = getattr(model, 'data_preprocessor', None)
    mean, std = getattr(pre, 'mean', None), getattr(pre, 'std', None)
    if mean is None or std is None or \
            not getattr(pre, '_enable_normalize', True):
        return None
    return mean.flatten().cpu(), std.flatten().cpu()


def preprocess(model: nn.Module, images: np.ndarray) -> Tensor:
    """RGB uint8 [N, H, W, 3] -> the tensor the model's data preprocessor
    gives (mean / std normalisation; RT-DETR's: x / 255)."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    stats = _mean_std(model)
    if stats is not None:
        x = (x - stats[0].view(1, -1, 1, 1)) / stats[1].view(1, -1, 1, 1)
    return x.contiguous()


def normalisation(model: nn.Module) -> Dict[str, object]:
    """What a deployment must do to an RGB image before the graph."""
    stats = _mean_std(model)
    if stats is None:
        return dict(channel_order='RGB', mean=[0.0] * 3, std=[1.0] * 3)
    return dict(channel_order='RGB', mean=stats[0].tolist(),
                std=stats[1].tolist())


def compare_dense(reference: Tensor, got: np.ndarray) -> Dict[str, float]:
    """Logits or maps: the largest difference and the same relative to the
    reference's range (its max - min)."""
    ref = reference.detach().double().numpy()
    if ref.shape != got.shape:
        raise AssertionError(f'shape {got.shape} from ONNX Runtime, '
                             f'{ref.shape} from PyTorch')
    diff = float(np.abs(ref - got.astype(np.float64)).max())
    span = float(ref.max() - ref.min()) or 1.0
    return dict(max_abs=diff, range=span, relative=diff / span,
                ok=diff / span <= DENSE_RTOL)


def compare_argmax(logits: Tensor, got: np.ndarray) -> Dict[str, float]:
    """Argmax maps: every pixel whose top two PyTorch logits differ by
    more than the dense tolerance must carry the same class."""
    top2 = logits.detach().double().topk(2, dim=1).values
    span = float(logits.max() - logits.min()) or 1.0
    clear = (top2[:, 0] - top2[:, 1] > DENSE_RTOL * span).numpy()
    want = logits.argmax(dim=1).numpy()
    differ = want != got
    return dict(pixels=int(want.size), differ=int(differ.sum()),
                differ_where_clear=int((differ & clear).sum()),
                ok=not (differ & clear).any())


def compare_detections(reference: Sequence[Tensor],
                       got: Sequence[np.ndarray]) -> Dict[str, float]:
    """RT-DETR's (labels, boxes, scores), per image.

    Scores: the sorted lists rank by rank (ties cannot change a sorted
    list). Detections: each PyTorch one must have an ONNX Runtime one with
    the same label, its score within SCORE_ATOL and its box within
    BOX_ATOL_PX, wherever near-tied scores put it in the ranking; only a
    detection within SCORE_ATOL of the last score kept may be missing (it
    can fall just below the other runtime's cut).
    """
    labels, boxes, scores = (t.detach().numpy() for t in reference)
    got_labels, got_boxes, got_scores = got
    if got_scores.shape != scores.shape or got_boxes.shape != boxes.shape:
        raise AssertionError(
            f'shapes {got_scores.shape}/{got_boxes.shape} from ONNX Runtime, '
            f'{scores.shape}/{boxes.shape} from PyTorch')
    score_diff = float(np.abs(np.sort(scores, -1).astype(np.float64) -
                              np.sort(got_scores, -1)).max())
    box_diff, unmatched, at_cut = 0.0, 0, 0
    for b in range(scores.shape[0]):
        candidate = (labels[b][:, None] == got_labels[b][None]) & (
            np.abs(scores[b][:, None] - got_scores[b][None]) <= SCORE_ATOL)
        distance = np.abs(boxes[b][:, None] - got_boxes[b][None]).max(-1)
        best = np.where(candidate, distance, np.inf).min(axis=1)
        missing = best > BOX_ATOL_PX
        cut = scores[b] <= scores[b].min() + SCORE_ATOL
        unmatched += int((missing & ~cut).sum())
        at_cut += int((missing & cut).sum())
        box_diff = max(box_diff, float(best[~missing].max(initial=0.0)))
    matched = int(scores.size - unmatched - at_cut)
    result = dict(score_max_abs=score_diff, box_max_abs_px=box_diff,
                  matched=matched, unmatched=unmatched,
                  missing_at_cut=at_cut,
                  ok=score_diff <= SCORE_ATOL and unmatched == 0 and
                  matched >= scores.size // 2)
    if matched < scores.size // 2:
        result['note'] = ('most scores lie within the tolerance of the '
                          'cut (an untrained model?): too few detections to '
                          'compare; check a trained checkpoint')
    return result


def detection_sizes(batch: int, seed: int = 0) -> Tensor:
    """Original (width, height) per image, of varied aspect."""
    rng = np.random.default_rng(seed + 1)
    sizes = np.stack([rng.integers(320, 1280, batch),
                      rng.integers(240, 960, batch)], axis=1)
    return torch.from_numpy(sizes).long()


def check_inputs(model: nn.Module, task: str, shape: Tuple[int, int],
                 batch: int, seed: int = 0) -> List[Tensor]:
    """The inputs of a check: images (and original sizes for RT-DETR)."""
    images = preprocess(model, sample_images(batch, *shape, seed=seed))
    if task == 'detection':
        return [images, detection_sizes(batch, seed)]
    return [images]
