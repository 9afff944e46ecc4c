"""The annotation policy of mmsparx's COCO datasets, one rule set shared by
training (:class:`CheckedCocoDataset`) and ``python -m mmsparx.datasets
check``, so the check reports exactly what training will drop or repair.

mmdet's ``CocoDataset`` drops the same boxes without a word; here each
one is counted and named:

* ``degenerate``: width or height under 1 pixel, or area <= 0: dropped.
* ``outside``: no overlap with the image: dropped.
* ``partly_outside``: overlaps the image but crosses its border: clipped
  to the image (kept; dropped as ``degenerate`` if under 1 pixel after).
* ``unknown_category``: ``category_id`` is not among the file's
  ``categories``: dropped (a broken file).
* ``not_in_classes``: a category of the file that the config's
  ``metainfo.classes`` leaves out: dropped (usually intended).
"""
from __future__ import annotations

from typing import Collection, List, Optional, Tuple

DROPPED = ('degenerate', 'outside', 'unknown_category', 'not_in_classes')
REPAIRED = ('partly_outside', )
PROBLEMS = DROPPED + REPAIRED

DESCRIPTIONS = {
    'degenerate': 'width or height < 1 px or area <= 0 (dropped)',
    'outside': 'box entirely outside the image (dropped)',
    'partly_outside': 'box crosses the image border (clipped)',
    'unknown_category': "category_id not in the file's categories "
                        '(dropped)',
    'not_in_classes': "category left out of the config's metainfo.classes "
                      '(dropped)',
}


def box_problem(ann: dict, width: float, height: float,
                file_cat_ids: Collection[int],
                used_cat_ids: Collection[int]
                ) -> Tuple[Optional[str], Optional[List[float]]]:
    """Classify one COCO annotation against its image.

    Returns ``(problem, bbox)``: ``problem`` is None or one of
    :data:`PROBLEMS`; ``bbox`` is the ``[x, y, w, h]`` to keep (clipped for
    ``partly_outside``), None when the annotation is dropped.
    """
    x, y, w, h = (float(v) for v in ann['bbox'])
    if ann['category_id'] not in file_cat_ids:
        return 'unknown_category', None
    if ann['category_id'] not in used_cat_ids:
        return 'not_in_classes', None
    if w < 1 or h < 1 or ann.get('area', w * h) <= 0:
        return 'degenerate', None
    x1, y1 = max(x, 0.0), max(y, 0.0)
    x2, y2 = min(x + w, float(width)), min(y + h, float(height))
    if x2 <= x1 or y2 <= y1:
        return 'outside', None
    if (x1, y1, x2, y2) == (x, y, x + w, y + h):
        return None, [x, y, w, h]
    if x2 - x1 < 1 or y2 - y1 < 1:
        return 'degenerate', None
    return 'partly_outside', [x1, y1, x2 - x1, y2 - y1]
