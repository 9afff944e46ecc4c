"""What is installed here and which scan runs, in the OpenMMLab way
(``python -m mmdet.utils.collect_env``): mmengine's summary (Python, CUDA,
GCC, PyTorch and its build, TorchVision, OpenCV, MMEngine), then mmcv and
the toolboxes with whether mmsparx registered into each, mmsparx and where
it is imported from, triton and mamba-ssm, and per device the selective
scan's and SS2D's backend.

    python -m mmsparx.analysis.collect_env
    python tools/misc/collect_env.py

It lives in ``analysis/``, not in ``utils/`` as mmdet's does: the scan's
choice is made in ``ops/``, a layer above ``utils/``. Nothing is run on a
device here; ``tools/analysis_tools/scan_paths.py`` also runs the GPU
kernels' first-use checks.
"""
from __future__ import annotations

import importlib.util
import os.path as osp
from typing import Dict

import torch

# pip name -> the name OpenMMLab's summaries give it.
LABELS = {'mmcv': 'MMCV', 'mmdet': 'MMDetection',
          'mmsegmentation': 'MMSegmentation', 'mmpretrain': 'MMPreTrain'}


def toolbox_state(entry: dict) -> str:
    """'VERSION (mmsparx registered)', 'VERSION (left out: ...)' or
    'not installed' for a toolbox of ``MINIMUMS``; mmcv says whether its
    compiled ops are there (RT-DETR needs them)."""
    from mmsparx.registry import SKIPPED, available_toolboxes
    from mmsparx.utils.versions import installed_version
    version = installed_version(entry)
    if version is None:
        return 'not installed'
    if entry['package'] == 'mmcv':
        ops = importlib.util.find_spec('mmcv._ext') is not None
        return f'{version} (compiled ops: {"yes" if ops else "no"})'
    scope, = entry['used_by']
    if scope in available_toolboxes():
        return f'{version} (mmsparx models registered)'
    if scope in SKIPPED:
        return f'{version} (left out: {SKIPPED[scope]})'
    return f'{version} (does not import; mmsparx models not registered)'


def scan_backends(device: str) -> Dict[str, str]:
    """The selective scan's and SS2D's backend on ``device`` (chosen as a
    model would choose them; nothing runs)."""
    from mmsparx.ops.scan_choice import describe, ss2d_backend
    from mmsparx.ops.selective_scan import available_backends, resolve_backend
    place = torch.device(device)
    usable = ', '.join(available_backends(place))
    return {f'selective scan ({device})':
            f'{resolve_backend(place)} (usable: {usable})',
            f'SS2D scan ({device})': describe(ss2d_backend(place))}


def collect_env() -> Dict[str, str]:
    """The summary, as ``{name: value}`` in print order."""
    from mmengine.utils.dl_utils import collect_env as collect_base

    from mmsparx.ops.scan_report import package_state
    from mmsparx.utils.cli import json_stdout
    from mmsparx.utils.versions import MINIMUMS
    from mmsparx.version import __version__
    env = collect_base()
    for entry in MINIMUMS:
        if entry['package'] in LABELS:
            env[LABELS[entry['package']]] = toolbox_state(entry)
    # This module's package: where mmsparx is imported from.
    package = osp.dirname(osp.dirname(osp.abspath(__file__)))
    env['mmsparx'] = f'{__version__} ({package})'
    env['triton'] = package_state('triton', 'triton')
    env['mamba-ssm'] = package_state('mamba-ssm',
                                     'mamba_ssm.ops.selective_scan_interface')
    devices = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])
    with json_stdout():  # the choice's log lines: stderr, not the summary
        for device in devices:
            env.update(scan_backends(device))
    return env


def main() -> None:
    for name, value in collect_env().items():
        print(f'{name}: {value}')


if __name__ == '__main__':
    main()
