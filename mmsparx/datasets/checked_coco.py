"""``CheckedCocoDataset``: mmdet's ``CocoDataset`` under the annotation
policy of :mod:`mmsparx.datasets.annotations`, with each dropped or
clipped box named in the log and counted, and each broken image file
stopping training with its name (see README, "Data checks")."""
from __future__ import annotations

import logging
from collections import Counter
from typing import Dict, List

from mmdet.datasets import CocoDataset
from mmengine.logging import print_log

from mmsparx.datasets.annotations import DESCRIPTIONS, PROBLEMS, box_problem
from mmsparx.datasets.images import image_problem

NAMED_PER_PROBLEM = 20  # log lines per kind; the summary counts them all


class BrokenImageError(RuntimeError):
    """An image file of the dataset is missing, empty, cut short or not an
    image; the message names it and the fix."""


class CheckedCocoDataset(CocoDataset):
    """``CocoDataset`` that says what it drops or repairs.

    Same arguments and outputs as mmdet's ``CocoDataset``; boxes that
    cross the image border are clipped to it (mmdet keeps them as they
    are), and an image file that cannot be read raises
    :class:`BrokenImageError` naming it (mmdet: a ``cv2.error`` without the
    name, or a silently half-grey image for a cut JPEG).
    """

    def load_data_list(self) -> List[dict]:
        self._problems: Counter = Counter()
        self._named: Counter = Counter()
        self._annotations = 0
        data_list = super().load_data_list()
        self._log_summary(len(data_list))
        return data_list

    def parse_data_info(self, raw_data_info: dict) -> dict:
        img = raw_data_info['raw_img_info']
        file_cat_ids = self.coco.cats.keys()
        kept = []
        for ann in raw_data_info['raw_ann_info']:
            self._annotations += 1
            if ann.get('ignore', False):
                continue  # the file marks it ignored: mmdet's rule
            problem, bbox = box_problem(ann, img['width'], img['height'],
                                        file_cat_ids, self.cat_ids)
            if problem is not None:
                self._report(problem, img['file_name'], ann)
            if bbox is not None:
                kept.append(dict(ann, bbox=bbox))
        return super().parse_data_info(
            dict(raw_data_info, raw_ann_info=kept))

    def filter_data(self) -> List[dict]:
        kept = super().filter_data()
        left_out = len(self.data_list) - len(kept)
        if left_out:
            print_log(
                f'{self.ann_file}: {left_out} of {len(self.data_list)} '
                f'images left out by filter_cfg={self.filter_cfg} (images '
                f'without a box of the classes, or smaller than min_size).',
                logger='current', level=logging.INFO)
        return kept

    def prepare_data(self, idx: int):
        path = self.get_data_info(idx)['img_path']
        problem = image_problem(path)
        if problem is not None:
            raise BrokenImageError(
                f'{path}: image file is {problem} (listed in '
                f'{self.ann_file}). Replace the file, or remove the image '
                f'from the annotation file; `python -m mmsparx.datasets '
                f'check CONFIG` lists every such file of a dataset.')
        return super().prepare_data(idx)

    def _report(self, problem: str, file_name: str, ann: dict) -> None:
        self._problems[problem] += 1
        if self._named[problem] >= NAMED_PER_PROBLEM:
            return
        self._named[problem] += 1
        action = 'clipped to the image' if problem == 'partly_outside' \
            else 'dropped'
        print_log(
            f'{self.ann_file}: {file_name}: annotation id '
            f'{ann.get("id")} (category_id {ann["category_id"]}, bbox '
            f'{ann["bbox"]}) {action}: '
            f'{DESCRIPTIONS[problem].rsplit(" (", 1)[0]}.',
            logger='current', level=logging.WARNING)

    def _log_summary(self, num_images: int) -> None:
        counts: Dict[str, int] = {p: self._problems[p] for p in PROBLEMS
                                  if self._problems[p]}
        if not counts:
            return
        dropped = sum(n for p, n in counts.items() if p != 'partly_outside')
        parts = ', '.join(f'{n} {p}' for p, n in counts.items())
        print_log(
            f'{self.ann_file}: {num_images} images, {self._annotations} '
            f'annotations: {dropped} dropped, '
            f'{counts.get("partly_outside", 0)} clipped ({parts}; at most '
            f'{NAMED_PER_PROBLEM} of each kind named above). `python -m '
            f'mmsparx.datasets check CONFIG` lists them all.',
            logger='current', level=logging.WARNING)
