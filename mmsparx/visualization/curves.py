"""Training curves from mmengine's ``vis_data/scalars.json``: every loss term
per logged iteration and the COCO metrics per validation, drawn to one PNG
(the demo's picture of a model that learns, and of one that does not)."""
from __future__ import annotations

import glob
import json
import os.path as osp
from typing import Dict, List, Sequence, Tuple

Series = List[Tuple[float, float]]
METRICS = ('coco/bbox_mAP', 'coco/segm_mAP')


def scalars_file(work_dir: str) -> str:
    """The newest run's ``scalars.json`` under ``work_dir``."""
    found = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data',
                                      'scalars.json')))
    if not found:
        raise FileNotFoundError(
            f'no */vis_data/scalars.json under {work_dir}: the config needs '
            "a LocalVisBackend (mmdet's default_runtime has one)")
    return found[-1]


def is_loss_term(key: str) -> bool:
    """``loss`` and its top-level terms (``loss_rpn_cls``, ``loss_mask``);
    not per-decoder-layer copies (``d0.loss_cls``) that would bury them."""
    return key.startswith('loss') and '.' not in key


def read_curves(path: str, metrics: Sequence[str] = METRICS
                ) -> Dict[str, Series]:
    """``{term: [(iteration, value)]}`` for every loss term and
    ``{metric: [(epoch, value)]}`` for each of ``metrics`` logged.

    Training rows carry the loss terms and ``iter``; validation rows carry
    the metrics with ``step`` = the epoch (mmengine's LoggerHook)."""
    curves: Dict[str, Series] = {'loss': []}
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            if 'iter' in row and 'loss' in row:
                for key, value in row.items():
                    if is_loss_term(key):
                        curves.setdefault(key, []).append((row['iter'],
                                                           value))
            for metric in metrics:
                if metric in row and 'iter' not in row:
                    curves.setdefault(metric, []).append((row['step'],
                                                          row[metric]))
    return curves


def draw_curves(curves: Dict[str, Series], out_file: str,
                title: str = '') -> None:
    """Loss terms (left, per iteration, log scale) and the metrics (right,
    per epoch)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for key, series in curves.items():
        if not series:
            continue
        axis = left if is_loss_term(key) else right
        style = dict(linewidth=2.0, color='black') if key == 'loss' else {}
        if axis is right:
            style = dict(marker='o')
        axis.plot(*zip(*series), label=key, **style)
    left.set(xlabel='iteration', ylabel='training loss', title='loss terms')
    if any(v > 0 for k, s in curves.items() if is_loss_term(k)
           for _, v in s):
        left.set_yscale('log')
    right.set(xlabel='epoch', ylabel='mAP', title='COCO mAP (val)',
              ylim=(0, None))
    for axis in (left, right):
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_file, dpi=100)
    plt.close(fig)
