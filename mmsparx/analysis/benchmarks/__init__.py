"""The subcommands of ``tools/analysis_tools/benchmark.py``: one module
each, with ``add_arguments(parser)`` and ``run(args) -> exit status``,
all timing through ``mmsparx.analysis.timing`` and measuring peak memory
through ``mmsparx.analysis.peak_memory``, so their figures compare."""
from types import ModuleType
from typing import Dict

from mmsparx.analysis.benchmarks import census, model, norm, scan, ss2d, step

SUBCOMMANDS: Dict[str, ModuleType] = {
    'model': model, 'step': step, 'ss2d': ss2d, 'norm': norm, 'scan': scan,
    'census': census}
# One line each, for the tool's --help.
SUMMARIES: Dict[str, str] = {
    'model': 'images/s and peak memory of classifiers or dense backbones '
             '(inference, --train, --dense)',
    'step': 'whole training steps of configs (ours or mmdet::/mmseg::)',
    'ss2d': "SS2D's scan per path at SparX-T's stage shapes",
    'norm': "SparX's group norm against ATen's",
    'scan': 'one selective scan, forward + backward, per backend',
    'census': 'CUDA kernels and bytes of a forward, counted without a GPU',
}

__all__ = ['SUBCOMMANDS', 'SUMMARIES']
