"""The metrics a finished run logged, read from the files mmengine writes.

A work dir holds one ``<timestamp>/`` folder per run. mmengine's
``LoggerHook`` writes a validation's metrics as one JSON row (with
``step``, no ``iter``) into ``<timestamp>/vis_data/scalars.json`` (and the
same rows into ``vis_data/<timestamp>.json``), and a test's
(``tools/test.py``) as one JSON object into ``<timestamp>/<timestamp>.json``;
``Runner.dump_config`` writes the config into the work dir under its file
name, and the visualizer the run's own copy into
``<timestamp>/vis_data/config.py``.
"""
from __future__ import annotations

import glob
import json
import os.path as osp
import re
from dataclasses import dataclass
from typing import Dict, List, Optional

TIMESTAMP = re.compile(r'^\d{8}_\d{6}$')  # mmengine's run folder name
# What LoggerHook adds to every row besides the metrics.
BOOKKEEPING = ('step', 'iter', 'epoch', 'time', 'data_time', 'lr',
               'memory')


class RunMetricsError(ValueError):
    """No metrics where they were looked for; the message says why and
    what to run or give instead."""


@dataclass
class RunMetrics:
    """One evaluation's metrics and where they were read."""
    values: Dict[str, float]
    path: str  # the file they were read from
    kind: str  # 'test' (tools/test.py) or 'val' (a training's validation)
    step: Optional[int]  # the epoch or iteration of a validation
    run_dir: Optional[str]  # the <timestamp> folder, when known
    unit: str = 'step'  # what ``step`` counts: 'epoch' or 'iteration'

    @property
    def work_dir(self) -> Optional[str]:
        return None if self.run_dir is None else osp.dirname(self.run_dir)

    def describe(self) -> str:
        if self.kind == 'test':
            return f'{self.path} (test)'
        return f'{self.path} (the last validation: {self.unit} {self.step})'


def read_rows(path: str) -> List[dict]:
    """The JSON objects of ``path``: one (a test's file) or one per line
    (scalars.json)."""
    with open(path) as f:
        text = f.read()
    try:
        rows = [json.loads(line) for line in text.splitlines()
                if line.strip()]
    except json.JSONDecodeError as err:
        raise RunMetricsError(f'{path} is not a metrics file mmengine '
                              f'writes (not JSON: {err}).') from None
    return [row for row in rows if isinstance(row, dict)]


def metric_values(row: dict) -> Dict[str, float]:
    """A row's numeric metrics (not the step, timings or the lr)."""
    return {key: float(value) for key, value in row.items()
            if key not in BOOKKEEPING and isinstance(value, (int, float))
            and not isinstance(value, bool)}


def from_file(path: str) -> Optional[RunMetrics]:
    """The test metrics of a ``<timestamp>.json`` or the last validation
    of a scalars file; None when it holds neither."""
    rows = read_rows(path)
    folder = osp.dirname(osp.abspath(path))
    run_dir = osp.dirname(folder) if osp.basename(folder) == 'vis_data' \
        else folder
    run_dir = run_dir if TIMESTAMP.match(osp.basename(run_dir)) else None
    if len(rows) == 1 and 'step' not in rows[0] and metric_values(rows[0]):
        return RunMetrics(metric_values(rows[0]), path, 'test', None,
                          run_dir)
    validations = [row for row in rows if 'iter' not in row and
                   'step' in row and metric_values(row)]
    if not validations:
        return None
    last = validations[-1]
    # Training rows carry 'epoch' only in an epoch-based loop, where the
    # validations' step is the epoch.
    training = [row for row in rows if 'iter' in row]
    unit = 'step' if not training else \
        'epoch' if 'epoch' in training[-1] else 'iteration'
    return RunMetrics(metric_values(last), path, 'val', last['step'],
                      run_dir, unit)


def from_run_dir(run_dir: str) -> Optional[RunMetrics]:
    """A run folder's test metrics, else its last validation's."""
    name = osp.basename(osp.normpath(run_dir))
    for path in (osp.join(run_dir, f'{name}.json'),
                 osp.join(run_dir, 'vis_data', 'scalars.json'),
                 osp.join(run_dir, 'vis_data', f'{name}.json')):
        if osp.isfile(path):
            found = from_file(path)
            if found is not None:
                return found
    return None


def run_dirs(work_dir: str) -> List[str]:
    """The run folders of ``work_dir``, oldest first."""
    return sorted(path for path in glob.glob(osp.join(work_dir, '*'))
                  if osp.isdir(path) and TIMESTAMP.match(osp.basename(path)))


def read_metrics(path: str) -> RunMetrics:
    """The metrics of ``path``: a work dir (its newest run that has
    some), a run folder, or a metrics file.

    Raises:
        RunMetricsError: none found, or ``path`` is no such thing.
    """
    if path.endswith(('.pkl', '.pickle')):
        raise RunMetricsError(
            f"{path} holds a test's predictions (tools/test.py --out), not "
            'its metrics. Give the work dir of the test, or the '
            '<timestamp>/<timestamp>.json file the test wrote there.')
    if osp.isfile(path):
        found = from_file(path)
        if found is None:
            raise RunMetricsError(
                f'{path} holds no metrics: neither a test result (one '
                'JSON object, as tools/test.py writes to '
                '<work_dir>/<timestamp>/<timestamp>.json) nor validation '
                'rows (vis_data/scalars.json of a training that '
                'validated).')
        return found
    if not osp.isdir(path):
        raise RunMetricsError(f'{path} does not exist. Give a work dir, '
                              'or the metrics file of a run in it.')
    folders = [path] if TIMESTAMP.match(osp.basename(osp.normpath(path))) \
        else run_dirs(path)
    for folder in reversed(folders):
        found = from_run_dir(folder)
        if found is not None:
            return found
    raise RunMetricsError(
        f'No metrics in {path}: none of its {len(folders)} run folder(s) '
        '(<timestamp>/) has a test result (<timestamp>/<timestamp>.json, '
        'what tools/test.py writes) or a validation row (<timestamp>/'
        'vis_data/scalars.json). Evaluate a checkpoint first: python '
        'tools/test.py CONFIG CHECKPOINT --work-dir '
        f'{path}, then compare again.')
