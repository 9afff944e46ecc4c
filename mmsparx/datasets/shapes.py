"""Seeded drawing of non-overlapping shapes: the pixels of every generated
dataset. Polygons are the ground truth, so boxes, masks and labels agree
with the image exactly (no occlusion: placements never overlap)."""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ('rectangle', 'ellipse', 'triangle')


@dataclass
class Shape:
    kind: int  # index into SHAPES
    polygon: List[Tuple[float, float]]  # (x, y) in pixels
    color: Tuple[int, int, int]

    @property
    def bbox(self) -> Tuple[float, float, float, float]:
        """``x, y, w, h`` as COCO stores it."""
        xs = [p[0] for p in self.polygon]
        ys = [p[1] for p in self.polygon]
        return min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)


def hue_color(hue: float, rng: np.random.Generator) -> Tuple[int, int, int]:
    """A saturated colour of the given hue (0..1), with a little jitter."""
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, rng.uniform(0.6, 1.0),
                                  rng.uniform(0.6, 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def polygon_of(kind: int, cx: float, cy: float, rx: float, ry: float,
               angle: float) -> List[Tuple[float, float]]:
    """Corners of a rotated rectangle, a 24-gon ellipse or a triangle."""
    if SHAPES[kind] == 'rectangle':
        base = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
    elif SHAPES[kind] == 'ellipse':
        base = [(math.cos(t), math.sin(t))
                for t in np.linspace(0, 2 * math.pi, 24, endpoint=False)]
    else:
        base = [(0, -1), (math.cos(math.pi / 6), 0.5),
                (-math.cos(math.pi / 6), 0.5)]
    ca, sa = math.cos(angle), math.sin(angle)
    return [(cx + rx * x * ca - ry * y * sa, cy + rx * x * sa + ry * y * ca)
            for x, y in base]


def background(height: int, width: int,
               rng: np.random.Generator) -> np.ndarray:
    """A low-contrast gradient with noise, so no pixel is trivially 0."""
    base = rng.uniform(40, 200, size=3)
    ramp = np.linspace(-30, 30, width)[None, :, None] * rng.uniform(-1, 1, 3)
    noise = rng.normal(0, 8, size=(height, width, 3))
    return np.clip(base + ramp + noise, 0, 255).astype(np.uint8)


def place_shapes(height: int, width: int, rng: np.random.Generator,
                 max_objects: int, kinds: Optional[List[int]] = None,
                 min_frac: float = 0.15, max_frac: float = 0.4
                 ) -> List[Tuple[int, float, float, float, float, float]]:
    """Non-overlapping ``(kind, cx, cy, rx, ry, angle)`` placements."""
    placed: List[Tuple[int, float, float, float, float, float]] = []
    boxes: List[Tuple[float, float, float, float]] = []
    count = int(rng.integers(1, max_objects + 1))
    short = min(height, width)
    for _ in range(count * 20):
        if len(placed) == count:
            break
        kind = int(rng.integers(len(SHAPES))) if kinds is None else int(
            rng.choice(kinds))
        rx = rng.uniform(min_frac, max_frac) * short / 2
        ry = rx * rng.uniform(0.6, 1.0)
        reach = max(rx, ry)
        if 2 * reach >= short - 2:
            continue
        cx = rng.uniform(reach + 1, width - reach - 1)
        cy = rng.uniform(reach + 1, height - reach - 1)
        box = (cx - reach, cy - reach, cx + reach, cy + reach)
        if any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3]
               and b[1] < box[3] for b in boxes):
            continue
        boxes.append(box)
        placed.append((kind, cx, cy, rx, ry, float(rng.uniform(0, math.pi))))
    return placed


def draw(height: int, width: int, shapes: List[Shape],
         rng: np.random.Generator,
         label_of: Optional[List[int]] = None
         ) -> Tuple[Image.Image, Optional[Image.Image]]:
    """The RGB image and, given one label per shape, the label map (0 where
    no shape is)."""
    image = Image.fromarray(background(height, width, rng))
    canvas = ImageDraw.Draw(image)
    label = None
    if label_of is not None:
        label = Image.new('L', (width, height), 0)
        label_canvas = ImageDraw.Draw(label)
    for i, shape in enumerate(shapes):
        canvas.polygon(shape.polygon, fill=shape.color)
        if label is not None:
            label_canvas.polygon(shape.polygon, fill=int(label_of[i]))
    return image, label
