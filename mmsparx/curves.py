"""Training curves from mmengine's ``vis_data/scalars.json``: the loss per
logged iteration and the validation metric per epoch, drawn to one PNG (the
demo's picture of a model that learns)."""
from __future__ import annotations

import glob
import json
import os.path as osp
from typing import Dict, List, Tuple

Series = List[Tuple[float, float]]


def scalars_file(work_dir: str) -> str:
    """The newest run's ``scalars.json`` under ``work_dir``."""
    found = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data',
                                      'scalars.json')))
    if not found:
        raise FileNotFoundError(
            f'no */vis_data/scalars.json under {work_dir}: the config needs '
            "a LocalVisBackend (mmdet's default_runtime has one)")
    return found[-1]


def read_curves(path: str, metric: str = 'coco/bbox_mAP'
                ) -> Dict[str, Series]:
    """``{'loss': [(iteration, loss)], metric: [(epoch, value)]}``.

    Training rows carry ``loss`` and ``iter``; validation rows carry the
    metric with ``step`` = the epoch (mmengine's LoggerHook)."""
    curves: Dict[str, Series] = {'loss': [], metric: []}
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            if 'loss' in row and 'iter' in row:
                curves['loss'].append((row['iter'], row['loss']))
            elif metric in row:
                curves[metric].append((row['step'], row[metric]))
    return curves


def draw_curves(curves: Dict[str, Series], out_file: str,
                title: str = '') -> None:
    """Loss (left, per iteration) and the metric (right, per epoch)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    metric = next(k for k in curves if k != 'loss')
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    if curves['loss']:
        left.plot(*zip(*curves['loss']), color='tab:blue')
    left.set(xlabel='iteration', ylabel='training loss', title='loss')
    if curves[metric]:
        right.plot(*zip(*curves[metric]), marker='o', color='tab:green')
    right.set(xlabel='epoch', ylabel=metric, title=metric, ylim=(0, None))
    for axis in (left, right):
        axis.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_file, dpi=100)
    plt.close(fig)
