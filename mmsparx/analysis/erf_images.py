"""Images for an ERF measurement, as RGB pixels 0-255 (N, 3, S, S): from a
folder, cut as ImageNet is evaluated (shorter side to ``S * 256 / 224``,
centre crop), or generated scenes of shapes when no folder is given.
Each backbone normalises them with its own mean and std."""
from __future__ import annotations

import os
import os.path as osp
from typing import List, Tuple

import numpy as np
import torch
from torch import Tensor

from mmsparx.analysis.erf import ERFInputError
from mmsparx.datasets.shapes import (Shape, draw, hue_color, place_shapes,
                                     polygon_of)

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp')
# ImageNet evaluation: resize the shorter side to 256, crop 224.
RESIZE_RATIO = 256 / 224


def image_files(root: str) -> List[str]:
    """Every image file under ``root`` (recursively), sorted."""
    found = []
    for folder, _, names in os.walk(root):
        found += [osp.join(folder, n) for n in names
                  if n.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found)


def _pixels(image, size: int) -> np.ndarray:
    from PIL import Image
    image = image.convert('RGB')
    short = round(size * RESIZE_RATIO)
    scale = short / min(image.size)
    resized = image.resize((max(short, round(image.size[0] * scale)),
                            max(short, round(image.size[1] * scale))),
                           Image.BICUBIC)
    left = (resized.size[0] - size) // 2
    top = (resized.size[1] - size) // 2
    return np.asarray(resized.crop((left, top, left + size, top + size)))


def folder_images(root: str, count: int, size: int, seed: int = 0
                  ) -> Tuple[Tensor, List[str]]:
    """(images, their files): ``count`` files of ``root`` drawn at random
    (seeded; all of them when there are fewer), cut to ``size``.

    Raises:
        ERFInputError: ``root`` is not a folder, holds no image, or an
            image cannot be decoded.
    """
    from PIL import Image
    if not osp.isdir(root):
        raise ERFInputError(f'--images {root} is not a folder: give a folder '
                            'of images (e.g. ImageNet val/), or leave it out '
                            'to measure on generated images.')
    files = image_files(root)
    if not files:
        raise ERFInputError(
            f'no image files ({", ".join(IMAGE_EXTENSIONS)}) under {root}: '
            'give a folder that holds images, or leave out --images to '
            'measure on generated images.')
    if len(files) > count:
        picks = np.random.default_rng(seed).choice(len(files), count,
                                                   replace=False)
        files = [files[i] for i in sorted(picks)]
    pixels = []
    for path in files:
        try:
            with Image.open(path) as image:
                pixels.append(_pixels(image, size))
        except Exception as err:  # PIL raises many types on a bad file
            raise ERFInputError(
                f'{path} could not be decoded ({type(err).__name__}: '
                f'{err}); remove or replace it.') from err
    return _to_tensor(pixels), files


def generated_images(count: int, size: int, seed: int = 0) -> Tensor:
    """``count`` scenes of up to four shapes on a noisy gradient (the
    generated datasets' drawing), for a measurement without a dataset."""
    pixels = []
    for index in range(count):
        rng = np.random.default_rng([seed, index])
        shapes = [Shape(kind, polygon_of(kind, cx, cy, rx, ry, angle),
                        hue_color(rng.uniform(), rng))
                  for kind, cx, cy, rx, ry, angle in place_shapes(
                      size, size, rng, 4)]
        image, _ = draw(size, size, shapes, rng)
        pixels.append(np.asarray(image))
    return _to_tensor(pixels)


def _to_tensor(pixels: List[np.ndarray]) -> Tensor:
    return torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float()
