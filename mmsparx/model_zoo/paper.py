"""A finished run's metrics beside the paper's (the metafile's
``Results``), for ``tools/analysis_tools/compare_with_paper.py``.

The metafiles give the papers' numbers in percent under OpenMMLab's names
(``box AP``, ``mIoU``, ``Top 1 Accuracy``); the toolboxes log them under
their evaluators' keys, mmdet's COCO metrics as fractions (0.481 for
48.1). ``PAPER_METRICS`` maps one onto the other.
"""
from __future__ import annotations

import difflib
import glob
import os.path as osp
from typing import Dict, List, Optional, Tuple

from mmsparx.model_zoo.metafiles import entries_by_config
from mmsparx.model_zoo.run_metrics import RunMetrics

# metafile metric -> (the key the toolbox logs, the factor to percent).
PAPER_METRICS: Dict[str, Tuple[str, float]] = {
    'box AP': ('coco/bbox_mAP', 100.0),
    'box AP50': ('coco/bbox_mAP_50', 100.0),
    'box AP75': ('coco/bbox_mAP_75', 100.0),
    'mask AP': ('coco/segm_mAP', 100.0),
    'mIoU': ('mIoU', 1.0),
    'mIoU(ms+flip)': ('mIoU', 1.0),
    'Top 1 Accuracy': ('accuracy/top1', 1.0),
    'Top 5 Accuracy': ('accuracy/top5', 1.0),
}
# Measured with test-time augmentation (``tools/test.py --tta``): only a
# TTA run's value is one of these, and a TTA run's is only one of these.
TTA_METRICS = ('mIoU(ms+flip)', )


class PaperComparisonError(ValueError):
    """The run cannot be put beside a paper row; the message says why and
    what to give instead."""


def find_entry(root: str, config: str) -> Tuple[str, dict]:
    """``(config path, metafile entry)`` for ``config``: a path (relative
    to ``root``, the current folder, or absolute) or a file name.

    Raises:
        PaperComparisonError: the config is in no metafile.
    """
    entries = entries_by_config(root)
    for candidate in (config, osp.relpath(osp.abspath(config), root)):
        if candidate in entries:
            return candidate, entries[candidate]
    by_name = {osp.basename(path): path for path in entries}
    name = osp.basename(config)
    if name in by_name:
        return by_name[name], entries[by_name[name]]
    close = difflib.get_close_matches(name, list(by_name), n=1, cutoff=0.8)
    hint = f' The closest is {by_name[close[0]]}.' if close else ''
    raise PaperComparisonError(
        f'{config} is not in any metafile (model-index.yml lists the '
        'configs with paper results: configs/<family>/metafile.yml), so '
        f'there is no paper row to compare with.{hint} Give the metafile '
        'config this run corresponds to: --config configs/<family>/'
        '<name>.py.')


def config_of_run(root: str, work_dir: Optional[str]) -> str:
    """The metafile config a work dir's runs are of: the config file
    mmengine dumped into it, or the work dir's own name (tools/train.py's
    default work_dirs/<config name>).

    Raises:
        PaperComparisonError: none or several metafile configs fit.
    """
    names = {osp.basename(path) for path in entries_by_config(root)}
    dumped = [] if work_dir is None else sorted(
        osp.basename(p) for p in glob.glob(osp.join(work_dir, '*.py')))
    found = [name for name in dumped if name in names]
    if not found and work_dir is not None and \
            osp.basename(osp.normpath(work_dir)) + '.py' in names:
        found = [osp.basename(osp.normpath(work_dir)) + '.py']
    if len(found) == 1:
        return found[0]
    where = work_dir or 'the metrics file\'s folder'
    if found:
        problem = (f'{where} holds the configs of several metafile models '
                   f'({", ".join(found)})')
    else:
        problem = (f'{where} holds no config of a metafile model (found: '
                   f'{", ".join(dumped) or "no .py file"})')
    raise PaperComparisonError(
        f'Which config this run is of is not known: {problem}. Give it: '
        '--config configs/<family>/<name>.py.')


def used_tta(run_dir: Optional[str]) -> bool:
    """Whether the run tested with test-time augmentation: its own config
    copy (vis_data/config.py) wraps the model in a TTA model (SegTTAModel,
    DetTTAModel, AverageClsScoreTTA), as ``tools/test.py --tta`` does."""
    path = None if run_dir is None else osp.join(run_dir, 'vis_data',
                                                 'config.py')
    if path is None or not osp.isfile(path):
        return False
    from mmengine.config import Config
    model = Config.fromfile(path, import_custom_modules=False).get('model')
    return isinstance(model, dict) and 'TTA' in str(model.get('type', ''))


def paper_rows(entry: dict, key: str = 'Results') -> List[dict]:
    """``[{metric, dataset, paper}]`` from an entry's results list."""
    return [dict(metric=name, dataset=result['Dataset'], paper=value)
            for result in entry.get(key) or []
            for name, value in result['Metrics'].items()]


def compare(metrics: RunMetrics, entry: dict, tta: bool = False
            ) -> List[dict]:
    """One row per paper metric: ``metric, dataset, key, ours, paper,
    diff`` (percent; ours and diff None when the run did not measure it)
    and ``note``; ``weights`` where the metafile gives the published
    checkpoint's own result.

    Raises:
        PaperComparisonError: the paper gives no results, or the run
            measured none of them.
    """
    papers = paper_rows(entry)
    if not papers:
        raise PaperComparisonError(
            f'{entry["Config"]} has no paper results in its metafile (no '
            '"Results"): nothing to compare with. Compare a config whose '
            'paper reports it.')
    # The published checkpoint's own results, where they differ from the
    # paper's (the metafile lists only those).
    weights = {row['metric']: row['paper']
               for row in paper_rows(entry, 'Weights Results')}
    published = 'Weights Results' in entry
    rows = []
    for paper in papers:
        name = paper['metric']
        key, factor = PAPER_METRICS.get(name, (None, 1.0))
        row = dict(paper, key=key, ours=None, diff=None, note='',
                   weights=weights.get(name, paper['paper'])
                   if published else None)
        if key is None:
            row['note'] = 'no known logged key'
        elif (name in TTA_METRICS) != tta:
            row['note'] = ('measured with test-time augmentation: test '
                           'with tools/test.py --tta' if not tta else
                           'single-scale; this run used test-time '
                           'augmentation')
        elif key not in metrics.values:
            row['note'] = f'{key} not logged'
        else:
            row['ours'] = metrics.values[key] * factor
            row['diff'] = row['ours'] - float(paper['paper'])
        rows.append(row)
    if all(row['ours'] is None for row in rows):
        wanted = ', '.join(f'{row["metric"]} ({row["key"]})' for row in rows)
        logged = ', '.join(sorted(metrics.values)) or 'none'
        raise PaperComparisonError(
            f'{metrics.path} has none of the metrics the paper gives for '
            f'{entry["Config"]}: it wants {wanted}; the run logged '
            f'{logged}. Is this the run of that config? Give the right '
            'one with --config.')
    return rows


def _number(value: Optional[float], sign: bool = False) -> str:
    if value is None:
        return '-'
    return f'{value:+.2f}' if sign else f'{value:.2f}'


def format_table(rows: List[dict]) -> str:
    """metric | ours | paper | diff (| weights), then the notes."""
    with_weights = any(row['weights'] is not None for row in rows)
    header = ['metric', 'ours', 'paper', 'diff'] + \
        (['weights'] if with_weights else [])
    lines = [[f'{row["metric"]} ({row["dataset"]})', _number(row['ours']),
              _number(float(row['paper'])), _number(row['diff'], True)] +
             ([_number(row['weights'])] if with_weights else [])
             for row in rows]
    widths = [max(len(line[i]) for line in [header] + lines)
              for i in range(len(header))]

    def join(cells: List[str]) -> str:
        return '  '.join([cells[0].ljust(widths[0])] + [
            cell.rjust(width) for cell, width in zip(cells[1:], widths[1:])])

    out = [join(header), join(['-' * w for w in widths])]
    out += [join(line) for line in lines]
    out += [f'{row["metric"]}: {row["note"]}' for row in rows if row['note']]
    if with_weights:
        out.append('weights: the published checkpoint\'s result (the '
                   'metafile\'s "Weights Results", else the paper\'s)')
    return '\n'.join(out)
