"""What runs the scans on a device here, for people (``tools/analysis_tools/
scan_paths.py``) and for gpu_check's JSON: the usable backends, the plain
selective scan's and SS2D's choice, mamba-ssm and triton, and the GPU
kernels' first-use checks with their verdicts and cost."""
from __future__ import annotations

from typing import Dict, Tuple

import torch

from mmsparx.ops import kernel_check
from mmsparx.ops.cross_selective_scan import fused_cross_verified
from mmsparx.ops.scan_choice import describe, ss2d_backend
from mmsparx.ops.selective_scan import (CHECKED_BACKENDS, available_backends,
                                        resolve_backend, verified_backend)


def package_state(name: str, module: str) -> str:
    """'VERSION', 'VERSION, does not import (...)' or 'not installed'."""
    import importlib
    from importlib import metadata
    try:
        version = metadata.version(name)
    except metadata.PackageNotFoundError:
        return 'not installed'
    try:
        importlib.import_module(module)
    except Exception as err:  # e.g. a CUDA build for another torch
        return f'{version}, does not import ({type(err).__name__}: {err})'
    return version


def scan_paths(device: torch.device) -> Dict[str, object]:
    """What runs the scans on ``device`` here, for people and gpu_check:
    the usable backends, the plain selective scan's and SS2D's choice,
    mamba-ssm and triton, and whether the kernels check themselves."""
    checks = kernel_checks(device) if torch.device(device).type == 'cuda' \
        and kernel_check.enabled() else {}
    return dict(
        device=str(device), backends=list(available_backends(device)),
        selective_scan=resolve_backend(device),
        ss2d=describe(ss2d_backend(device)),
        mamba_ssm=package_state(
            'mamba-ssm', 'mamba_ssm.ops.selective_scan_interface'),
        triton=package_state('triton', 'triton'),
        kernel_check='on' if kernel_check.enabled() else
        f'off ({kernel_check.CHECK_ENV}=0)', kernel_checks=checks)


def kernel_checks(device: torch.device) -> Dict[str, Dict[str, object]]:
    """Run the first-use checks of the GPU kernels SS2D and the selective
    scan take here, as a SparX model meets them (bfloat16, d_state 1,
    softplus): per kernel, passed or not, and the milliseconds of the
    first run (Triton's compilation included) and of a second (the
    check's own cost)."""
    def run_checks() -> Dict[Tuple, float]:
        kernel_check.reset()
        name = resolve_backend(device)
        if name in CHECKED_BACKENDS:
            verified_backend(name, device, torch.bfloat16, 1, True)
        if ss2d_backend(device) == 'triton':
            fused_cross_verified(device, torch.bfloat16, 1, True)
        return dict(kernel_check.timings)
    first, second = run_checks(), run_checks()
    return {f'{key[0]} {key[2]}': dict(
        passed=kernel_check.problem(key) is None,
        first_ms=round(1000 * first[key], 1),
        ms=round(1000 * second.get(key, float('nan')), 1))
        for key in first}
