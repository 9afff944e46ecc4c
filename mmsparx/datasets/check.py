"""``python -m mmsparx.datasets check CONFIG``: every image decoded and
every annotation judged, before hours of training find them one by one.

COCO sets get the rules of :mod:`mmsparx.datasets.annotations` (what
``CheckedCocoDataset`` drops or clips while training); images of every
layout are decoded fully (missing, 0-byte, truncated, undecodable). One
table row per split and problem; exit status 1 when any is found.
"""
from __future__ import annotations

import glob
import json
import os.path as osp
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from mmsparx.datasets.annotations import DESCRIPTIONS, PROBLEMS, box_problem
from mmsparx.datasets.images import decode_problem, image_problem
from mmsparx.datasets.preflight import DatasetPaths, dataset_paths

IMAGE_PROBLEMS = ('missing', 'empty', 'truncated', 'unreadable',
                  'size_mismatch')
IMAGE_DESCRIPTIONS = {
    'missing': 'listed in the annotations, no such file',
    'empty': '0-byte file',
    'truncated': 'file cut short (decodes partly)',
    'unreadable': 'not a decodable image',
    'size_mismatch': 'decoded size differs from the annotation',
}
_IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff',
                   '.webp')


@dataclass
class SplitReport:
    """Counts and examples of one dataset entry of a config."""
    key: str
    images: int = 0
    annotations: int = 0
    counts: Counter = field(default_factory=Counter)
    examples: Dict[str, List[str]] = field(default_factory=dict)

    def add(self, problem: str, example: str) -> None:
        self.counts[problem] += 1
        self.examples.setdefault(problem, []).append(example)


def _check_image(report: SplitReport, path: str,
                 size: Optional[tuple] = None) -> None:
    problem = image_problem(path, full=False)
    if problem is None:
        problem, decoded = decode_problem(path)
        if problem is None and size is not None and decoded != size:
            report.add('size_mismatch', f'{path}: {decoded[0]}x{decoded[1]}'
                       f' on disk, {size[0]}x{size[1]} annotated')
            return
    if problem is not None:
        kind = problem.split(' ', 1)[0]
        report.add(kind, path if kind in ('missing', 'empty')
                   else f'{path}: {problem}')


def _classes(ds: dict) -> Optional[Sequence[str]]:
    metainfo = ds.get('metainfo') or {}
    if metainfo.get('classes'):
        return metainfo['classes']
    try:  # the toolbox's default (COCO's 80 names)
        from mmdet.datasets import CocoDataset
        return CocoDataset.METAINFO['classes']
    except ImportError:
        return None


def check_coco(paths: DatasetPaths, ds: dict) -> SplitReport:
    """Judge every image and box of a COCO-style dataset entry."""
    report = SplitReport(paths.key)
    if len(paths.needed) < 2:
        report.add('missing', f'{paths.key}.ann_file (not set)')
        return report
    ann_file = paths.needed[0][1]
    with open(ann_file) as f:
        coco = json.load(f)
    img_dir = paths.needed[-1][1]
    file_cat_ids = {c['id'] for c in coco.get('categories', [])}
    classes = _classes(ds)
    used = {c['id'] for c in coco.get('categories', [])
            if classes is None or c['name'] in classes}
    images = {img['id']: img for img in coco.get('images', [])}
    report.images = len(images)
    report.annotations = len(coco.get('annotations', []))
    for img in images.values():
        size = (img.get('width'), img.get('height'))
        _check_image(report, osp.join(img_dir, img['file_name']),
                     size if None not in size else None)
    for ann in coco.get('annotations', []):
        img = images.get(ann['image_id'])
        if img is None:
            report.add('unknown_image', f'annotation id {ann.get("id")}')
            continue
        problem, _ = box_problem(ann, img['width'], img['height'],
                                 file_cat_ids, used)
        if problem is not None:
            report.add(problem, f'{img["file_name"]}: annotation id '
                       f'{ann.get("id")} (category_id {ann["category_id"]},'
                       f' bbox {ann["bbox"]})')
    return report


def check_folder(paths: DatasetPaths) -> SplitReport:
    """Decode every image of an ADE20K or ImageNet style entry (and, for
    ADE20K, require a label map per image)."""
    report = SplitReport(paths.key)
    folders = [full for _, full, is_dir in paths.needed if is_dir]
    images = sorted(p for p in glob.glob(osp.join(folders[0], '**', '*'),
                                         recursive=True)
                    if p.lower().endswith(_IMAGE_SUFFIXES))
    report.images = len(images)
    for path in images:
        _check_image(report, path)
    if paths.family == 'ADE20K':
        report.annotations = len(glob.glob(osp.join(folders[1], '*.png')))
        for path in images:
            stem = osp.splitext(osp.relpath(path, folders[0]))[0]
            label = osp.join(folders[1], stem + '.png')
            if not osp.isfile(label):
                report.add('missing', f'{label} (label map of {path})')
    return report


def check_config(cfg, splits: Sequence[str] = ('train', 'val', 'test')
                 ) -> List[SplitReport]:
    """Reports for each dataset entry of ``splits``; a test split that is
    the val split (mmdet's default) is checked once."""
    reports, seen = [], set()
    for paths in dataset_paths(cfg, splits):
        ident = (paths.family, tuple(paths.needed))
        if ident in seen:
            continue
        seen.add(ident)
        gone = [full for _, full, _ in paths.needed if not osp.exists(full)]
        if gone:
            report = SplitReport(paths.key)
            for full in gone:
                report.add('missing', full)
        elif paths.family == 'COCO':
            ds = cfg
            for part in paths.key.split('.'):
                ds = ds[int(part)] if isinstance(ds, list) else ds[part]
            report = check_coco(paths, ds)
        else:
            report = check_folder(paths)
        reports.append(report)
    return reports


def format_table(reports: Sequence[SplitReport], examples: int = 5) -> str:
    """The per-split table, then up to ``examples`` names per problem."""
    descriptions = {**IMAGE_DESCRIPTIONS, **DESCRIPTIONS,
                    'unknown_image': 'annotation of an image not listed'}
    order = IMAGE_PROBLEMS + PROBLEMS + ('unknown_image', )
    rows = [('dataset', 'images', 'annotations', 'problem', 'count')]
    for r in reports:
        found = [p for p in order if r.counts[p]]
        if not found:
            rows.append((r.key, str(r.images), str(r.annotations), 'none',
                         '0'))
        for i, problem in enumerate(found):
            head = (r.key, str(r.images), str(r.annotations)) if i == 0 \
                else ('', '', '')
            rows.append(head + (f'{problem}: {descriptions[problem]}',
                                str(r.counts[problem])))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ['  '.join(cell.ljust(w) for cell, w in zip(row, widths))
             .rstrip() for row in rows]
    lines.insert(1, '  '.join('-' * w for w in widths))
    for r in reports:
        for problem in order:
            for text in r.examples.get(problem, [])[:examples]:
                lines.append(f'{r.key}: {problem}: {text}')
            left = len(r.examples.get(problem, [])) - examples
            if left > 0:
                lines.append(f'{r.key}: {problem}: ... {left} more')
    return '\n'.join(lines)
