"""A prediction as the image demo shows it: drawn on the image it was made
for, and as lines of text (the same numbers the picture carries)."""
from __future__ import annotations

from typing import List

import numpy as np

from mmsparx.apis.inference import (Predictor, detections, ignore_index,
                                    names_of, seg_map, top_classes)
from mmsparx.visualization.predictions import (class_areas,
                                               draw_classification,
                                               draw_detections,
                                               draw_segmentation)


def read_image(path: str) -> np.ndarray:
    """The file as OpenCV reads it (BGR uint8), as the test pipelines'
    ``LoadImageFromFile`` does."""
    import cv2
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f'OpenCV cannot read {path}')
    return image


def draw_prediction(predictor: Predictor, image: np.ndarray, sample,
                    score_thr: float = 0.3, topk: int = 5) -> np.ndarray:
    """``sample`` (the model's answer for ``image``) drawn on a copy of
    ``image``: detections at or above ``score_thr``, the class map, or the
    ``topk`` classes."""
    if predictor.task == 'detection':
        found = detections(sample, score_thr)
        return draw_detections(image, found['bboxes'], found['labels'],
                               found['scores'], predictor.classes,
                               found['masks'], predictor.palette)
    if predictor.task == 'segmentation':
        return draw_segmentation(image, seg_map(sample), predictor.classes,
                                 predictor.palette, ignore_index(predictor))
    top = top_classes(sample, topk)
    names = names_of(predictor, [label for label, _ in top])
    return draw_classification(image, [(name, prob) for name, (_, prob)
                                       in zip(names, top)])


def describe(predictor: Predictor, sample, score_thr: float = 0.3,
             topk: int = 5) -> List[str]:
    """What :func:`draw_prediction` draws, one line per item: detections
    (class, score, box), classes by share of the image, or the ranked
    top classes with their probabilities."""
    if predictor.task == 'detection':
        found = detections(sample, score_thr)
        names = names_of(predictor, found['labels'])
        mask = ', mask' if found['masks'] is not None else ''
        lines = [f'{len(names)} detections with score >= {score_thr}{mask}']
        for name, label, score, box in zip(names, found['labels'],
                                           found['scores'], found['bboxes']):
            corners = ', '.join(f'{v:.1f}' for v in box)
            lines.append(f'  {name} ({int(label)}) {float(score):.4f} '
                         f'[{corners}]')
        return lines
    if predictor.task == 'segmentation':
        areas = class_areas(seg_map(sample), ignore_index(predictor))
        names = names_of(predictor, [label for label, _ in areas])
        return [f'{len(areas)} classes in the map (share of the pixels)'] + [
            f'  {name} ({label}) {share:.2%}'
            for name, (label, share) in zip(names, areas)]
    top = top_classes(sample, topk)
    names = names_of(predictor, [label for label, _ in top])
    return [f'top-{len(top)} classes'] + [
        f'  {rank}. {name} ({label}) {prob:.6f}'
        for rank, (name, (label, prob)) in enumerate(zip(names, top), 1)]
