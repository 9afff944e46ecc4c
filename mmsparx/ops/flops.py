"""FLOP counting of the selective scan for mmengine's complexity analysis.

mmengine (like fvcore) counts what ``torch.jit.trace`` records; the scan is
recorded as one op, ``prim::PythonOp.SelectiveScanOp`` (see
``selective_scan``), and :func:`register_flop_handles` teaches mmengine's
default FlopAnalyzer its cost, so ``get_model_complexity_info`` counts it
for any model built from mmsparx layers.
"""
from __future__ import annotations

from typing import Any, List

SCAN_OP = 'prim::PythonOp.SelectiveScanOp'


def _shape(value: Any) -> List[int]:
    return list(value.type().sizes())


def selective_scan_flops(batch: int, channels: int, length: int,
                         d_state: int, with_D: bool = True) -> int:
    """The papers' convention (VMamba): 9 B L D N multiply-adds for the
    recurrence, discretisation and readout, plus B D L for the D skip."""
    flops = 9 * batch * length * channels * d_state
    return flops + (batch * channels * length if with_D else 0)


def selective_scan_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """mmengine op handle: inputs are (u, delta, A, B, C, D, ...)."""
    batch, channels, length = _shape(inputs[0])
    d_state = _shape(inputs[2])[1]
    with_D = inputs[5].type().kind() != 'NoneType' if len(inputs) > 5 \
        else False
    return selective_scan_flops(batch, channels, length, d_state, with_D)


def register_flop_handles() -> None:
    """Add the scan to mmengine's default FLOP handles (idempotent)."""
    try:
        from mmengine.analysis import complexity_analysis
    except ImportError:
        return
    complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS[SCAN_OP] = \
        selective_scan_flop_jit
