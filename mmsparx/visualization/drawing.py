"""Drawing primitives for prediction pictures (OpenCV on BGR uint8 arrays):
colours per class, text that fits the image, a colour map blended in.
Plain arrays in and out, so they need no toolbox installed."""
from __future__ import annotations

import colorsys
from typing import List, Optional, Sequence, Tuple

import numpy as np

Colour = Tuple[int, int, int]
FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX
# Text height as a fraction of the image's short side, and its bounds in
# cv2 font-scale units: readable on 1000-pixel photos, still drawn on
# 64-pixel test images.
TEXT_FRACTION = 1 / 30
SCALE_BOUNDS = (0.25, 1.2)


def class_colours(num_classes: int,
                  palette: Optional[Sequence[Sequence[int]]] = None
                  ) -> List[Colour]:
    """One BGR colour per class: the dataset's RGB ``palette`` where it
    names enough colours, else hues spread by the golden ratio (classes
    with neighbouring indices get distant colours)."""
    if palette is not None and len(palette) >= num_classes:
        return [(int(c[2]), int(c[1]), int(c[0]))
                for c in palette[:num_classes]]
    colours = []
    for index in range(num_classes):
        hue = (index * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.95)
        colours.append((int(b * 255), int(g * 255), int(r * 255)))
    return colours


def font_scale(image: np.ndarray) -> float:
    """The cv2 font scale for ``image``: text about 1/30 of its short
    side (a scale of 1 is about 22 pixels high)."""
    scale = min(image.shape[:2]) * TEXT_FRACTION / 22
    return float(np.clip(scale, *SCALE_BOUNDS))


def text_size(text: str, scale: float) -> Tuple[int, int, int]:
    """(width, height above the baseline, descent) of ``text``."""
    import cv2
    (width, height), baseline = cv2.getTextSize(text, FONT, scale, 1)
    return width, height, baseline


def fit_text(text: str, scale: float, max_width: int) -> str:
    """``text`` cut (ending in '..') to fit ``max_width`` pixels."""
    if text_size(text, scale)[0] <= max_width:
        return text
    while len(text) > 1 and text_size(text + '..', scale)[0] > max_width:
        text = text[:-1]
    return text + '..'


def readable_on(colour: Colour) -> Colour:
    """Black or white, whichever reads better on ``colour`` (BGR)."""
    b, g, r = colour
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else \
        (255, 255, 255)


def put_label(image: np.ndarray, text: str, x: int, y: int,
              colour: Colour, scale: float) -> None:
    """``text`` on a filled box of ``colour`` whose bottom-left corner is
    (x, y) (moved inside the image where it would leave it)."""
    import cv2
    h, w = image.shape[:2]
    text = fit_text(text, scale, w - 2)
    tw, th, base = text_size(text, scale)
    box_h = th + base + 2
    x = int(np.clip(x, 0, max(0, w - tw - 2)))
    y = int(np.clip(y, box_h, h))
    cv2.rectangle(image, (x, y - box_h), (x + tw + 2, y), colour, -1)
    cv2.putText(image, text, (x + 1, y - base - 1), FONT, scale,
                readable_on(colour), 1, cv2.LINE_AA)


def blend(image: np.ndarray, colour_map: np.ndarray, where: np.ndarray,
          alpha: float) -> None:
    """``image`` mixed in place with ``colour_map`` (alpha of the colour)
    at the pixels of the boolean mask ``where``."""
    mixed = (1 - alpha) * image[where] + alpha * colour_map[where]
    image[where] = np.clip(mixed + 0.5, 0, 255).astype(np.uint8)


def text_panel(image: np.ndarray, lines: Sequence[str],
               swatches: Optional[Sequence[Colour]] = None,
               alpha: float = 0.6) -> None:
    """``lines`` in white on a darkened band at the top-left of
    ``image``, the first ones after a colour swatch each if ``swatches``
    are given; the lines that do not fit the image's height are left
    out."""
    import cv2
    h, w = image.shape[:2]
    scale = font_scale(image)
    _, th, base = text_size('Ag', scale)
    row = th + base + 2
    lines = list(lines)[:max(1, h // row)]
    indent = row if swatches is not None else 0
    lines = [fit_text(line, scale, w - indent - 4) for line in lines]
    width = min(w, indent + 4 + max(text_size(t, scale)[0] for t in lines))
    band = np.zeros((h, w), bool)
    band[:min(h, row * len(lines) + 2), :width] = True
    blend(image, np.zeros_like(image), band, alpha)
    for i, line in enumerate(lines):
        top = i * row + 1
        if swatches is not None and i < len(swatches):
            cv2.rectangle(image, (2, top + 1), (row - 2, top + row - 2),
                          swatches[i], -1)
        cv2.putText(image, line, (indent + 2, top + th), FONT, scale,
                    (255, 255, 255), 1, cv2.LINE_AA)


def rgb_palette(num_classes: int,
                palette: Optional[Sequence[Sequence[int]]] = None
                ) -> List[List[int]]:
    """:func:`class_colours` as the RGB lists the toolboxes' visualizers
    take."""
    return [[c[2], c[1], c[0]] for c in class_colours(num_classes, palette)]
