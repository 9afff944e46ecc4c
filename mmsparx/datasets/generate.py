"""Deterministic generated datasets in the three formats the toolboxes read.

* COCO instance segmentation (mmdet ``CocoDataset``): ``train/``, ``val/``
  and ``annotations/instances_{train,val}.json`` with boxes and polygons of
  three shape categories.
* ADE20K semantic segmentation (mmseg ``ADE20KDataset``):
  ``images/{training,validation}/*.jpg`` and ``annotations/.../*.png`` where
  0 is "other" (ignored by ``reduce_zero_label``) and 1..150 are classes.
* ImageNet classification (mmpretrain ``ImageNet``/``CustomDataset``):
  ``{train,val}/<wnid>/*.JPEG`` plus ``meta/{train,val}.txt`` and
  ``meta/classes.txt``.

The same seed gives byte-identical files.
"""
from __future__ import annotations

import json
import os
import os.path as osp
from typing import Dict, List, Tuple

import numpy as np

from mmsparx.datasets.shapes import (SHAPES, Shape, draw, hue_color,
                                     place_shapes, polygon_of)

ADE_NUM_CLASSES = 150


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    # One stream per image: sizes and splits can change without
    # reshuffling the other images.
    return np.random.default_rng([seed, {'train': 0, 'val': 1}[split], index])


def _save_jpeg(image, path: str) -> None:
    image.save(path, quality=95, subsampling=0)


def generate_coco(out_dir: str, num_train: int = 64, num_val: int = 16,
                  size: Tuple[int, int] = (256, 256), seed: int = 0,
                  max_objects: int = 4) -> Dict[str, str]:
    """Write a COCO-format instance segmentation set; return its paths."""
    height, width = size
    categories = [dict(id=i + 1, name=name, supercategory='shape')
                  for i, name in enumerate(SHAPES)]
    paths = {}
    os.makedirs(osp.join(out_dir, 'annotations'), exist_ok=True)
    for split, count in (('train', num_train), ('val', num_val)):
        os.makedirs(osp.join(out_dir, split), exist_ok=True)
        images, annotations = [], []
        for index in range(count):
            rng = _rng(seed, split, index)
            shapes = [Shape(kind, polygon_pts, hue_color(rng.uniform(), rng))
                      for kind, polygon_pts in _coco_polygons(
                          height, width, rng, max_objects)]
            image, _ = draw(height, width, shapes, rng)
            file_name = f'{index:06d}.jpg'
            _save_jpeg(image, osp.join(out_dir, split, file_name))
            image_id = index + 1
            images.append(dict(id=image_id, file_name=file_name,
                               height=height, width=width))
            for shape in shapes:
                x, y, w, h = shape.bbox
                flat = [round(float(c), 2) for p in shape.polygon for c in p]
                annotations.append(dict(
                    id=len(annotations) + 1, image_id=image_id,
                    category_id=shape.kind + 1, segmentation=[flat],
                    area=round(_polygon_area(shape.polygon), 2),
                    bbox=[round(float(v), 2) for v in (x, y, w, h)],
                    iscrowd=0))
        ann_file = osp.join(out_dir, 'annotations', f'instances_{split}.json')
        with open(ann_file, 'w') as f:
            json.dump(dict(images=images, annotations=annotations,
                           categories=categories), f)
        paths[split] = ann_file
    return paths


def _coco_polygons(height, width, rng, max_objects):
    for kind, cx, cy, rx, ry, angle in place_shapes(height, width, rng,
                                                    max_objects):
        yield kind, polygon_of(kind, cx, cy, rx, ry, angle)


def _polygon_area(polygon: List[Tuple[float, float]]) -> float:
    xs = np.array([p[0] for p in polygon])
    ys = np.array([p[1] for p in polygon])
    return float(abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1)))
                 / 2)


def _class_hue(label: int, num_classes: int) -> float:
    """Each class owns a hue, so classes are learnable from colour."""
    return (label * 0.618033988749895) % 1.0 if num_classes > 1 else 0.0


def generate_ade20k(out_dir: str, num_train: int = 32, num_val: int = 8,
                    size: Tuple[int, int] = (256, 256), seed: int = 0,
                    num_classes: int = ADE_NUM_CLASSES,
                    max_objects: int = 5) -> Dict[str, str]:
    """Write an ADE20K-format semantic segmentation set.

    Label ``k`` in 1..``num_classes`` is drawn in its own hue; label 0 is
    the "other" background, which ``reduce_zero_label=True`` maps to 255.
    """
    if not 1 <= num_classes <= ADE_NUM_CLASSES:
        raise ValueError(f'num_classes must be in 1..{ADE_NUM_CLASSES}, '
                         f'got {num_classes}')
    height, width = size
    paths = {}
    for split, count in (('train', num_train), ('val', num_val)):
        folder = {'train': 'training', 'val': 'validation'}[split]
        img_dir = osp.join(out_dir, 'images', folder)
        ann_dir = osp.join(out_dir, 'annotations', folder)
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        for index in range(count):
            rng = _rng(seed, split, index)
            shapes, labels = [], []
            for kind, cx, cy, rx, ry, angle in place_shapes(
                    height, width, rng, max_objects):
                label = int(rng.integers(1, num_classes + 1))
                shapes.append(Shape(kind, polygon_of(kind, cx, cy, rx, ry,
                                                     angle),
                                    hue_color(_class_hue(label, num_classes),
                                              rng)))
                labels.append(label)
            image, label_map = draw(height, width, shapes, rng, labels)
            stem = f'ADE_{split}_{index + 1:08d}'
            _save_jpeg(image, osp.join(img_dir, stem + '.jpg'))
            label_map.save(osp.join(ann_dir, stem + '.png'))
        paths[split] = img_dir
    return paths


def generate_imagenet(out_dir: str, num_classes: int = 10,
                      train_per_class: int = 8, val_per_class: int = 2,
                      size: Tuple[int, int] = (64, 64), seed: int = 0
                      ) -> Dict[str, str]:
    """Write an ImageNet-format folder; class ``c`` is one shape kind in
    one hue band, so a classifier can learn it."""
    height, width = size
    wnids = [f'n{c:08d}' for c in range(num_classes)]
    os.makedirs(osp.join(out_dir, 'meta'), exist_ok=True)
    with open(osp.join(out_dir, 'meta', 'classes.txt'), 'w') as f:
        f.write(''.join(w + '\n' for w in wnids))
    paths = {}
    for split, per_class in (('train', train_per_class),
                             ('val', val_per_class)):
        lines = []
        for c, wnid in enumerate(wnids):
            os.makedirs(osp.join(out_dir, split, wnid), exist_ok=True)
            for i in range(per_class):
                rng = _rng(seed, split, c * per_class + i)
                kind = c % len(SHAPES)
                shapes = [Shape(kind, polygon_of(kind, cx, cy, rx, ry, angle),
                                hue_color(_class_hue(c // len(SHAPES),
                                                     num_classes), rng))
                          for kind, cx, cy, rx, ry, angle in place_shapes(
                              height, width, rng, 1, kinds=[kind],
                              min_frac=0.4, max_frac=0.7)]
                image, _ = draw(height, width, shapes, rng)
                rel = f'{wnid}/{wnid}_{i}.JPEG'
                _save_jpeg(image, osp.join(out_dir, split, rel))
                lines.append(f'{rel} {c}\n')
        ann_file = osp.join(out_dir, 'meta', f'{split}.txt')
        with open(ann_file, 'w') as f:
            f.write(''.join(lines))
        paths[split] = ann_file
    return paths
