"""Keep freed CPU tensor memory in the process instead of handing it back.

glibc maps each large block (above a threshold that starts at 128 KiB) as a
fresh region and returns it on free, so every big activation of a CPU
training step is faulted in again page by page; on the 2-core machine that
was ~9 % of a SparX-Mamba-T step (``benchmark.py model --train``: 2.59 -> 2.86
img/s, and steadier than torch's ``THP_MEM_ALLOC_ENABLE``, which stalled
some runs). Serving blocks up to glibc's 32 MiB cap from the heap and never
trimming it makes the step reuse the same pages. It applies at any time
(torch imported or not); the cost is that the process keeps its peak heap.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

ENV = 'MMSPARX_MALLOC_TUNING'
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# glibc refuses larger mmap thresholds (HEAP_MAX_SIZE / 2 on 64-bit).
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 2**31 - 1  # the largest an int takes: never trim


def keep_freed_memory() -> bool:
    """Set glibc's thresholds unless ``$MMSPARX_MALLOC_TUNING`` is ``0``;
    whether they were set (False off glibc, e.g. macOS or musl)."""
    if os.environ.get(ENV, '1') == '0' or not sys.platform.startswith(
            'linux'):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and \
        bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
