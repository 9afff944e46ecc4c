"""Which CUDA path runs SS2D's scan: the fused Triton cross scan, or the
generic path (four sequences as tensors, one selective scan: mamba-ssm's
kernel where it is installed, else the generic Triton scan).

The rule for ``auto`` on CUDA (:func:`ss2d_backend`): the fused Triton
cross scan wherever triton runs, mamba-ssm installed or not. Its four
directions read the map in place (no 4x copies, no merge) and its state
stays in registers; mamba-ssm's kernel sees the four sequences only as
tensors built by the generic path. For inference the generic path (on
mamba-ssm where installed) is timed against it per shape, below.

Fused wherever gradients are kept (it saves a quarter of the memory) and
under ``torch.compile`` (its ops stay whole). For inference the faster one
depends on the GPU and the shape, so the first call of each shape times
both (``cudnn.benchmark``'s way) and keeps the faster; where timing is not
possible (a CUDA graph being captured, ``MMSPARX_SCAN_TUNE=0``) a rule
measured on one H200 decides. Each choice is logged once.
"""
from __future__ import annotations

import os
from typing import Callable, Dict, Tuple

import torch
from torch import Tensor

from mmsparx.ops import kernels

# The rule: generic for inference when its (image, 4 directions x 16
# channels) programs reach this many per SM. On one H200 (bf16, SS2D of
# SparX-T, ``tools/analysis_tools/benchmark.py ss2d``, the fused kernel
# reading the columns with a stride, per-chunk programs): batch 64 at 56x56, 23
# programs per SM, fused 9.2 ms against 5.2 forward; batch 2 at 200x336,
# 0.7 per SM, fused 4.1 against 5.0.
GENERIC_PROGRAMS_PER_SM = 4
TUNE_ENV = 'MMSPARX_SCAN_TUNE'
TIMED_RUNS = 3

_choices: Dict[Tuple, bool] = {}


def ss2d_backend(device: torch.device, requested: str = 'auto') -> str:
    """The backend SS2D's scan runs on (``triton`` meaning the fused cross
    scan): :func:`~mmsparx.ops.selective_scan.resolve_backend`'s choice,
    except that ``auto`` takes triton over mamba-ssm on CUDA (the rule
    above). Logged once per device type and choice."""
    from mmsparx.ops.selective_scan import (BACKEND_ENV, available_backends,
                                            resolve_backend)
    name = resolve_backend(device, requested)
    chosen = requested == 'auto' and not os.environ.get(BACKEND_ENV)
    if chosen and name == 'mamba_ssm' and \
            'triton' in available_backends(device):
        name = 'triton'
    kind = torch.device(device).type
    kernels.log_once(('ss2d', kind, name),
                     f'mmsparx SS2D scan on {kind}: {describe(name)}')
    return name


def describe(name: str) -> str:
    """What SS2D runs on backend ``name``, in words."""
    if name == 'fused_cpu':
        return 'the fused C++ cross scan'
    if name != 'triton':
        return f'the generic path on the {name} backend'
    from mmsparx.ops.selective_scan import available_backends
    generic = 'mamba_ssm' if 'mamba_ssm' in available_backends('cuda') \
        else 'triton'
    return ('the fused Triton cross scan (for inference timed per shape '
            f'against the generic path on {generic})')


def _time_ms(fn: Callable[[], Tensor]) -> float:
    """The fastest of ``TIMED_RUNS`` CUDA-event timings of ``fn`` (after
    one untimed call, which compiles its kernels)."""
    fn()
    best = float('inf')
    for _ in range(TIMED_RUNS):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end))
    return best


def _rule(x: Tensor) -> bool:
    sms = torch.cuda.get_device_properties(x.device).multi_processor_count
    programs = x.shape[0] * 4 * -(-x.shape[1] // 16)
    return programs < GENERIC_PROGRAMS_PER_SM * sms


def _can_time(x: Tensor) -> bool:
    """Not while a CUDA graph is captured, nor on fake tensors (which
    compute nothing: ``mmsparx.analysis.cuda_census``)."""
    return os.environ.get(TUNE_ENV, '1') != '0' and \
        not isinstance(x, torch._subclasses.FakeTensor) and \
        not torch.cuda.is_current_stream_capturing()


def fused_pays(x: Tensor, fused: Callable[[], Tensor],
               generic: Callable[[], Tensor]) -> bool:
    """Whether ``fused()`` rather than ``generic()`` computes the scan of
    ``x`` (B, d, H, W); both compute the same function."""
    if torch.is_grad_enabled() or x.device.type != 'cuda' or \
            torch.compiler.is_compiling():
        return True
    key = (tuple(x.shape), x.dtype, x.device, torch.is_autocast_enabled(
        'cuda'))
    if key in _choices:
        return _choices[key]
    if not _can_time(x):
        return _rule(x)
    fused_ms = _time_ms(fused)
    try:
        generic_ms = _time_ms(generic)
    except torch.cuda.OutOfMemoryError:  # its copies need 4x the memory
        generic_ms = float('inf')
        torch.cuda.empty_cache()
    choice = _choices[key] = fused_ms <= generic_ms
    from mmengine.logging import print_log
    print_log(f'mmsparx SS2D scan {tuple(x.shape)} {x.dtype}: fused '
              f'{fused_ms:.2f} ms, generic {generic_ms:.2f} ms -> '
              f'{"fused" if choice else "generic"}', logger='current')
    return choice
