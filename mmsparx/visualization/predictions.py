"""One model's answer for one image, drawn on it (BGR uint8 in, a new
array of the same size out): boxes and masks, a class map, the top
classes. The callers hand plain arrays (see :mod:`mmsparx.apis.inference`)
so that no toolbox's data structures are needed here."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from mmsparx.visualization.drawing import (blend, class_colours,
                                           font_scale, put_label, text_panel)

MASK_ALPHA = 0.45  # a mask's colour over the image
SEG_ALPHA = 0.5  # a class map's colour over the image
LEGEND_LINES = 8  # the largest classes named; the rest counted


def class_name(names: Sequence[str], label: int) -> str:
    """The name of ``label``, or its number where ``names`` has none."""
    return str(names[label]) if 0 <= label < len(names) else f'class {label}'


def draw_detections(image: np.ndarray, boxes: np.ndarray,
                    labels: np.ndarray, scores: np.ndarray,
                    names: Sequence[str],
                    masks: Optional[np.ndarray] = None,
                    palette: Optional[Sequence[Sequence[int]]] = None
                    ) -> np.ndarray:
    """Each detection's mask (if given), box and ``name score`` label.

    Args:
        image: (H, W, 3) BGR uint8.
        boxes: (N, 4) x1, y1, x2, y2 in the image's pixels.
        labels, scores: (N, ) class indices and scores.
        names: class names; ``palette``: their RGB colours (optional).
        masks: (N, H, W) booleans, or None for a box-only detector.
    """
    import cv2
    out = image.copy()
    count = max([len(names)] + [int(v) + 1 for v in labels])
    colours = class_colours(count, palette)
    if masks is not None:
        for mask, label in zip(masks, labels):
            fill = np.empty_like(out)
            fill[:] = colours[int(label)]
            blend(out, fill, mask.astype(bool), MASK_ALPHA)
    scale = font_scale(out)
    thickness = max(1, round(min(out.shape[:2]) / 300))
    # The weakest first, so the strongest boxes and labels end on top.
    for i in np.argsort(scores, kind='stable'):
        colour = colours[int(labels[i])]
        x1, y1, x2, y2 = (int(round(float(v))) for v in boxes[i])
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thickness)
        put_label(out, f'{class_name(names, int(labels[i]))} '
                  f'{float(scores[i]):.2f}', x1, y1, colour, scale)
    return out


def class_areas(seg_map: np.ndarray, ignore_index: int = 255
                ) -> List[Tuple[int, float]]:
    """(class, fraction of the image) for each class in ``seg_map``,
    largest first."""
    values, counts = np.unique(seg_map, return_counts=True)
    keep = values != ignore_index
    order = np.argsort(-counts[keep], kind='stable')
    total = seg_map.size
    return [(int(values[keep][i]), float(counts[keep][i]) / total)
            for i in order]


def draw_segmentation(image: np.ndarray, seg_map: np.ndarray,
                      names: Sequence[str],
                      palette: Optional[Sequence[Sequence[int]]] = None,
                      ignore_index: int = 255) -> np.ndarray:
    """``seg_map`` ((H, W) class indices) coloured over ``image`` with a
    legend of the classes present, largest first."""
    out = image.copy()
    areas = class_areas(seg_map, ignore_index)
    count = max([len(names)] + [label + 1 for label, _ in areas])
    colours = np.array(class_colours(count, palette), np.uint8)
    valid = seg_map != ignore_index
    colour_map = np.zeros_like(out)
    colour_map[valid] = colours[seg_map[valid]]
    blend(out, colour_map, valid, SEG_ALPHA)
    shown = areas[:LEGEND_LINES]
    lines = [f'{class_name(names, label)} {share:.0%}'
             for label, share in shown]
    if len(areas) > len(shown):
        lines.append(f'+{len(areas) - len(shown)} more')
    text_panel(out, lines, swatches=[tuple(int(c) for c in colours[label])
                                     for label, _ in shown])
    return out


def draw_classification(image: np.ndarray,
                        top: Sequence[Tuple[str, float]]) -> np.ndarray:
    """The top classes and their probabilities written over ``image``,
    one line each in rank order."""
    out = image.copy()
    text_panel(out, [f'{rank}. {name} {prob:.3f}'
                     for rank, (name, prob) in enumerate(top, 1)])
    return out
