"""How many aten operators a forward runs: with small inputs a GPU step is
bound by launches and Python dispatch, so the count predicts its time
where FLOPs do not.

Counted with the CPU profiler (``torch.profiler``, CPU activity only, so
it works the same on every device): ``all`` is every event named
``aten::*``, nested calls included (``aten::linear`` -> ``aten::t`` ->
``aten::transpose`` -> ``aten::as_strided``, ``aten::addmm``), ``top``
only those not called from another aten op, i.e. the operators the model's
Python code calls. Custom kernels (triton, the C++ scan) are not aten ops
and count as none.
"""
from __future__ import annotations

from typing import Callable, Dict

import torch


def count_aten_ops(fn: Callable[[], object]) -> Dict[str, int]:
    """``{'all': N, 'top': M}``: the aten operator events of ``fn()``."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities) as prof:
        fn()
    events = [e for e in prof.events() if e.name.startswith('aten::')]
    top = sum(1 for e in events if e.cpu_parent is None
              or not e.cpu_parent.name.startswith('aten::'))
    return dict(all=len(events), top=top)
