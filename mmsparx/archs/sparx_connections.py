"""SparX connection rules (paper section "Connection Rules").

Kept apart from the modules so Table 7's ablations (stride S, window M,
placement) are arguments, and the plan can be checked without a model.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

STAGE_INPUT = 's'


def ganglion_indices(depth: int, stride: int,
                     start: Optional[int]) -> List[int]:
    """The last layer, then every ``stride``-th one backwards, not before
    ``start``; ``start=None`` means a stage of normal layers only."""
    if start is None:
        return []
    if stride < 1:
        raise ValueError(f'ganglion stride must be >= 1, got {stride}')
    return sorted(range(depth - 1, start - 1, -stride))


def connection_plan(depth: int, ganglia: Sequence[int], window: int,
                    with_stage_input: bool
                    ) -> List[Optional[Tuple[str, ...]]]:
    """For each layer: None (normal) or the names of what a ganglion layer
    concatenates, oldest first: 's' (stage input), 'o{j}' (normal output),
    'g{j}' (ganglion output).

    The normal list (stage input, then normal outputs) is cleared at each
    ganglion layer; the ganglion list keeps the last ``window`` (M) entries.
    """
    normal: List[str] = [STAGE_INPUT] if with_stage_input else []
    previous: List[str] = []
    plan: List[Optional[Tuple[str, ...]]] = []
    for index in range(depth):
        if index in ganglia:
            plan.append(tuple(normal + previous))
            normal = []
            previous = (previous + [f'g{index}'])[-window:] if window else []
        else:
            plan.append(None)
            normal.append(f'o{index}')
    return plan
