"""Measurements the benchmark tools share: activation memory kept for
backward and operator counts (plain torch, no toolbox needed)."""
from mmsparx.analysis.op_count import count_aten_ops
from mmsparx.analysis.saved_memory import model_storages, saved_bytes

__all__ = ['count_aten_ops', 'model_storages', 'saved_bytes']
