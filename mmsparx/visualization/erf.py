"""Effective receptive fields drawn side by side: one column per backbone,
one row per stage, all on one colour scale (0-1, RepLKNet's red-yellow-
green), so that the spread of the maps compares at a glance (matplotlib,
imported when drawn)."""
from __future__ import annotations

import os
import os.path as osp
import textwrap
from typing import Sequence, Tuple

import numpy as np

Panel = Tuple[np.ndarray, str]


def draw_erf(columns: Sequence[Sequence[Panel]], title: str, out_file: str,
             panel_inches: float = 3.0) -> str:
    """Draw ``columns`` (one per backbone: ``(map in [0, 1], caption)``
    per stage, top to bottom) into ``out_file`` under ``title``; returns
    ``out_file``."""
    from matplotlib.figure import Figure
    if not columns or not all(columns):
        raise ValueError('draw_erf needs at least one panel per column')
    rows = max(len(column) for column in columns)
    width = max(panel_inches * len(columns) + 1.0, 5.0)
    fig = Figure(figsize=(width, panel_inches * rows + 1.0),
                 layout='constrained')
    axes = fig.subplots(rows, len(columns), squeeze=False)
    image = None
    for c, column in enumerate(columns):
        for r in range(rows):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if r >= len(column):
                ax.axis('off')
                continue
            erf, caption = column[r]
            image = ax.imshow(erf, cmap='RdYlGn', vmin=0.0, vmax=1.0,
                              interpolation='nearest')
            ax.set_title(caption, fontsize=8)
    # About 14 characters of 9-point text per inch.
    lines = [textwrap.fill(line, int(width * 14))
             for line in title.splitlines()]
    fig.suptitle('\n'.join(lines), fontsize=9)
    fig.colorbar(image, ax=axes, shrink=0.8)
    os.makedirs(osp.dirname(osp.abspath(out_file)), exist_ok=True)
    fig.savefig(out_file, dpi=100)
    return out_file
