"""What the scan backends and the layers share: the compiled CPU kernels
(one loader), the inputs every backend starts from, and the export switch.
Every file reaches them through these public names."""
from __future__ import annotations

import contextlib
import importlib
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


_CACHE: list = []


def cpu_kernel():
    """The compiled CPU scan: the AVX2 build where the CPU has AVX2 (torch
    reports it), else the portable one; None when neither was built.
    While ``torch.compile`` traces, the same functions as ``torch.library``
    ops (``cpu_library.py``), which keep the graph whole."""
    if torch.compiler.is_compiling():
        return _CACHE[1]
    if not _CACHE:
        names = ['_scan_cpu']
        if torch.backends.cpu.get_cpu_capability() in ('AVX2', 'AVX512'):
            names.insert(0, '_scan_cpu_avx2')
        module = None
        for name in names:
            try:
                module = importlib.import_module(f'mmsparx.ops.{name}')
                break
            except ImportError:
                continue
        from mmsparx.ops.cpu_library import compiled_kernels
        _CACHE.extend([module, compiled_kernels(module)])
    return _CACHE[0]


def prepare_scan_inputs(u: Tensor, delta: Tensor, A: Tensor, B: Tensor,
                        delta_bias: Optional[Tensor], delta_softplus: bool
                        ) -> Tuple[Tensor, Tensor, Tensor]:
    """The scan contract every backend starts from: float32 u, A and the
    discretisation step delta (bias added, softplus applied); B's groups
    checked."""
    u, delta, A = u.float(), delta.float(), A.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    check_groups(u, B)
    return u, delta, A


def check_groups(u: Tensor, B: Tensor) -> None:
    """u's channels split evenly into B's (and C's) groups."""
    if u.shape[1] % B.shape[1]:
        raise ValueError(f'{u.shape[1]} channels cannot be split into '
                         f'{B.shape[1]} groups of B and C')


_EXPORT_DEPTH = [0]


@contextlib.contextmanager
def onnx_export_mode():
    """Inside, every selective scan (traced or not) runs as
    :func:`mmsparx.ops.scan_doubling.selective_scan_doubling`: standard
    ONNX operators only, with no
    data-dependent choice (the ``chunked`` backend's chunk size reads the
    data) and no kernel call baked into the traced graph."""
    _EXPORT_DEPTH[0] += 1
    try:
        yield
    finally:
        _EXPORT_DEPTH[0] -= 1


def exporting() -> bool:
    """Whether an :func:`onnx_export_mode` block is active."""
    return _EXPORT_DEPTH[0] > 0


_logged: set = set()


def log_once(key: Tuple, message: str) -> None:
    """``message`` to the current logger the first time ``key`` is met in
    the process (a scan path chosen); not while Dynamo traces, where the
    logger's lock would break the graph."""
    if key in _logged or torch.compiler.is_compiling():
        return
    _logged.add(key)
    from mmengine.logging import print_log
    print_log(message, logger='current')
