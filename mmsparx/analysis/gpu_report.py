"""What ``tools/analysis_tools/gpu_check.py`` makes of its steps' outputs:
pytest counts, the parity verdict, the ratios against the speed targets,
and the closing table. Pure functions of the step records, so they test
without a GPU."""
from __future__ import annotations

import re
from typing import Dict, List, Optional

PARITY_TOLERANCE = 1e-4
# (name, step, what, row of ours, baseline role, per, op, target); the
# roles are the baselines gpu_check.py was given (--swin / --convnext).
TARGETS = [
    ('train bf16 img/s SparX-T / Swin-T', 'train bf16', 'img_per_s',
     'sparx-mamba-t', 'swin', '>=', 0.5),
    ('train bf16 peak memory SparX-T / Swin-T', 'train bf16', 'peak_mem_mb',
     'sparx-mamba-t', 'swin', '<=', 1.5),
    ('saved MiB/image SparX-T / Swin-T', 'train bf16', 'saved_mib_per_image',
     'sparx-mamba-t', 'swin', '<=', 1.5),
    ('inference fp16 img/s SparX-T / Swin-T', 'inference fp16', 'img_per_s',
     'sparx-mamba-t', 'swin', '>=', 0.5),
    ('inference fp32 img/s SparX-T / Swin-T', 'inference fp32', 'img_per_s',
     'sparx-mamba-t', 'swin', '>=', 0.65),
    ('Mask R-CNN 1x s/iter SparX-T / Swin-T', 'mask rcnn step', 's_per_iter',
     'ours', 'theirs', '<=', 1.3),
    ('Mask R-CNN 1x peak memory SparX-T / Swin-T', 'mask rcnn step',
     'peak_mem_mb', 'ours', 'theirs', '<=', 1.5),
    ('dense step s/iter SparX-T / ConvNeXt-T', 'dense step', 's_per_iter',
     'sparx-mamba-t', 'convnext', '<=', 3.0),
    # No target: reported beside the others.
    ('saved MiB/image SparX-T / ConvNeXt-T', 'train bf16',
     'saved_mib_per_image', 'sparx-mamba-t', 'convnext', None, None),
    ('UperNet s/iter SparX-T / Swin-T', 'upernet step', 's_per_iter', 'ours',
     'theirs', None, None),
    ('UperNet peak memory SparX-T / Swin-T', 'upernet step', 'peak_mem_mb',
     'ours', 'theirs', None, None),
    ('RT-DETR s/iter SpaRTAN-T / R18vd', 'rtdetr step', 's_per_iter', 'ours',
     'theirs', None, None),
]


def parse_pytest(output: str) -> dict:
    """Counts of the final summary line and the failing test ids."""
    counts = {}
    summary = [line for line in output.splitlines()
               if re.search(r'\d+ (passed|failed|error|skipped|deselected)',
                            line)]
    if summary:
        for number, word in re.findall(
                r'(\d+) (passed|failed|errors?|skipped|deselected|xfailed|'
                r'xpassed)', summary[-1]):
            counts[word.rstrip('s') if word.startswith('error') else word] = \
                int(number)
    failing = re.findall(r'^(?:FAILED|ERROR) (\S+)', output, re.MULTILINE)
    return dict(counts=counts, failing=failing)


def parity_verdict(rows: List[dict]) -> dict:
    """The worst difference per backend and whether all are within the
    fixtures' tolerance."""
    worst: Dict[str, float] = {}
    for row in rows:
        backend = row['backend']
        worst[backend] = max([worst.get(backend, 0.0)]
                             + list(row['max_abs_diff']))
    flags = {k: rows[0][k] for k in ('matmul_allow_tf32', 'cudnn_allow_tf32')
             if rows and k in rows[0]}
    return dict(worst_by_backend=worst, tf32=flags,
                within_tolerance=all(v < PARITY_TOLERANCE
                                     for v in worst.values()))


def _value(step: Optional[dict], row_name: str, key: str) -> Optional[float]:
    if not step or not isinstance(step.get('results'), list):
        return None
    for row in step['results']:
        if row.get('role', row.get('name')) == row_name and key in row:
            return row[key]
    return None


def ratios(steps: Dict[str, dict], roles: Dict[str, str]) -> List[dict]:
    """Each TARGETS entry with its value (None when a step or row is
    missing) and whether it meets the target."""
    out = []
    for label, step, key, ours, base, op, target in TARGETS:
        ours_v = _value(steps.get(step), roles.get(ours, ours), key)
        base_v = _value(steps.get(step), roles.get(base, base), key)
        value = (ours_v / base_v if ours_v is not None and base_v
                 else None)
        met = None
        if value is not None and target is not None:
            met = value >= target if op == '>=' else value <= target
        out.append(dict(name=label, value=None if value is None else
                        round(value, 3), target=None if target is None
                        else f'{op} {target}', met=met))
    return out


def table(summary: dict) -> str:
    """A short text table: each step's outcome, then each ratio."""
    width = max([22] + [len(s['name']) + 2 for s in summary['steps']])
    lines = [f'{"step":<{width}}{"status":<10}{"s":>7}  note']
    for step in summary['steps']:
        status = ('skipped' if step.get('skipped') else
                  'ok' if step['returncode'] == 0 else 'FAILED')
        lines.append(f'{step["name"]:<{width}}{status:<10}'
                     f'{step.get("seconds", 0):>7.1f}  '
                     f'{step.get("note", "")}')
    lines.append('')
    lines.append(f'{"ratio":<46}{"value":>8}  {"target":<8} met')
    for ratio in summary['ratios']:
        value = '-' if ratio['value'] is None else f'{ratio["value"]:.3f}'
        met = {True: 'yes', False: 'NO', None: '-'}[ratio['met']]
        lines.append(f'{ratio["name"]:<46}{value:>8}  '
                     f'{ratio["target"] or "-":<8} {met}')
    return '\n'.join(lines)
