"""The one timer of the benchmark tools, so that every figure they print
means the same thing: warm-up runs first (lazy set-up, autotuning, a
compile), the device synchronised before and after each run (CUDA kernels
are asynchronous: without it a run times its launches), every run's
seconds kept, the median reported."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Tuple, Union

import torch

Device = Union[torch.device, str]


def synchronizer(device: Device) -> Callable[[], None]:
    """What waits for ``device``'s queued work: CUDA's synchronize, else
    nothing (CPU ops finish before they return)."""
    device = torch.device(device)
    if device.type == 'cuda':
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


@dataclass(frozen=True)
class Timing:
    """Seconds of each timed run; the warm-up runs' apart (the first one
    holds a compile or an autotuning pass, worth reporting on its own)."""
    seconds: Tuple[float, ...]
    warmup_seconds: Tuple[float, ...] = ()

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def minimum(self) -> float:
        return min(self.seconds)

    @property
    def maximum(self) -> float:
        return max(self.seconds)

    @property
    def spread(self) -> float:
        """(max - min) / median: how far to trust the median."""
        return (self.maximum - self.minimum) / self.median

    @property
    def median_ms(self) -> float:
        return self.median * 1e3


def time_runs(fn: Callable[[], object], warmup: int, runs: int,
              device: Device) -> Timing:
    """``warmup`` untimed calls of ``fn``, then ``runs`` timed ones, each
    between two synchronisations of ``device``. ``runs`` must be >= 1."""
    if runs < 1:
        raise ValueError(f'runs must be at least 1, got {runs}')
    sync = synchronizer(device)
    times = []
    for _ in range(warmup + runs):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return Timing(seconds=tuple(times[warmup:]),
                  warmup_seconds=tuple(times[:warmup]))
