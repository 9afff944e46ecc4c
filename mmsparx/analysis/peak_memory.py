"""The one peak-memory measure of the benchmark tools: CUDA's max
allocated on a GPU, else the growth of the process's peak resident set
(the only peak a CPU run has: ``getrusage``'s high-water mark, which never
goes down, so a figure is the growth above what the process had already
reached when the meter started)."""
from __future__ import annotations

import gc
import resource
import sys
from typing import Union

import torch

# ru_maxrss is KiB on Linux, bytes on macOS.
_RSS_UNIT = 1 if sys.platform == 'darwin' else 1024


def peak_rss_mib() -> float:
    """The process's peak resident set so far, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * \
        _RSS_UNIT / 2**20


class PeakMemory:
    """Started on creation (and by :meth:`reset`): frees what the garbage
    collector and CUDA's cache hold and zeroes CUDA's peak, so that
    :meth:`mib` is the peak of what ran since."""

    def __init__(self, device: Union[torch.device, str]) -> None:
        self.device = torch.device(device)
        self.reset()

    @property
    def cuda(self) -> bool:
        return self.device.type == 'cuda'

    @property
    def kind(self) -> str:
        """What :meth:`mib` measures, for the rows that say so."""
        return 'cuda_max_allocated' if self.cuda else 'process_rss_growth'

    def reset(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.cuda_start = torch.cuda.memory_allocated(self.device)
        self.rss_start = peak_rss_mib()

    def mib(self, above_start: bool = False) -> float:
        """MiB: CUDA's max allocated since the start (with ``above_start``
        less what was allocated then, e.g. the inputs), else the growth of
        the peak RSS (always above the start)."""
        if self.cuda:
            peak = torch.cuda.max_memory_allocated(self.device)
            return (peak - (self.cuda_start if above_start else 0)) / 2**20
        return peak_rss_mib() - self.rss_start
