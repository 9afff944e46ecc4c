"""Print each launched process's share of the CPU cores, for dist_*.sh.

    python tools/misc/threads_per_process.py GPUS

Without CUDA, GPUS processes run on the CPU; each one's OpenMP pool sized
to every core oversubscribes the machine (a forward ran 100x slower on a
loaded 2-core machine), so the scripts give each max(1, cores // GPUS)
threads. With CUDA, or a GPUS that is no count (torchrun's "auto", "cpu"),
this prints nothing and the scripts leave torchrun's default alone.
"""
from __future__ import annotations

import os
import sys
from typing import Optional, Sequence


def available_cores() -> int:
    """Cores this process may run on (affinity, as ``nproc`` counts)."""
    if hasattr(os, 'sched_getaffinity'):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def threads_per_process(processes: int, cores: int) -> int:
    """Each of ``processes`` gets an equal share, at least one thread."""
    return max(1, cores // max(1, processes))


def share(gpus: str, cuda: bool, cores: int) -> Optional[int]:
    """The thread count to export, or None to leave the environment."""
    if cuda:
        return None
    try:
        processes = int(gpus)
    except ValueError:
        return None
    if processes < 1:
        return None
    return threads_per_process(processes, cores)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        sys.exit('usage: threads_per_process.py GPUS')
    import torch
    threads = share(args[0], torch.cuda.is_available(), available_cores())
    if threads is not None:
        print(threads)


if __name__ == '__main__':
    main()
