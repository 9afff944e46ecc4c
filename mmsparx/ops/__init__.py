"""Operators: the selective scan (with its backends) and the 2-D cross scan."""
from mmsparx.ops.cross_scan import cross_merge, cross_scan
from mmsparx.ops.cross_selective_scan import cross_selective_scan, directional
from mmsparx.ops.selective_scan import (BACKENDS, available_backends,
                                        onnx_export_mode, selective_scan,
                                        selective_scan_reference)

__all__ = ['selective_scan', 'selective_scan_reference', 'available_backends',
           'BACKENDS', 'cross_scan', 'cross_merge', 'cross_selective_scan',
           'directional', 'onnx_export_mode']

from mmsparx.ops.flops import register_flop_handles  # noqa: E402

register_flop_handles()
