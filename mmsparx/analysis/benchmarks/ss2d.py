"""Kernel-level time of SS2D's scan (map in, merged map out) per path, at
SparX-Mamba-T's stage shapes: the step that the fused Triton cross scan
replaces, measured in isolation against what it replaces.

    python tools/analysis_tools/benchmark.py ss2d [--shapes cls224-s1-inner dense-s1-inner] [--paths fused cross generic-triton] [--batch N] [--json]

Shapes: the ``-inner`` entries of ``mmsparx.analysis.shapes`` (SS2D's
inner width 2C at each stage's size). Paths: ``fused``
(``cross_selective_scan`` as SS2D calls it: on CUDA the Triton cross scan
or, for inference whose batch fills the GPU, the generic Triton scan; on
CPU the C++ kernel), the Triton cross scan itself (CUDA or the
interpreter): ``cross`` (as it chooses), ``cross-seq`` (forward programs
walk whole sequences: ``SEQUENTIAL``), ``cross-chunked`` (a program per
chunk, after summary and carry passes), ``cross-strided`` (chunked, the
columns read from the row-major map with a stride: ``TRANSPOSE_COLUMNS``
off, the kernel as first timed), and ``generic-<backend>`` (the four
sequences built as tensors, one ``selective_scan`` on that backend,
merged). Inputs as SS2D makes them under bf16 autocast: x, dt_low, B and C
in bfloat16 (dt_low, B, C views of one projection), parameters in float32.
Median milliseconds after warm-up (``mmsparx.analysis.timing``) of the
forward alone and of forward + backward, and the peak memory above the
inputs (CUDA, ``mmsparx.analysis.peak_memory``).
"""
from __future__ import annotations

import argparse
import json
from typing import Dict, List, Tuple

import torch

from mmsparx.analysis.peak_memory import PeakMemory
from mmsparx.analysis.shapes import SHAPES, inner_names
from mmsparx.analysis.timing import time_runs
from mmsparx.ops import cross_selective_scan
from mmsparx.ops.cross_selective_scan import cross_selective_scan_generic
from mmsparx.utils.cli import json_stdout

DEFAULT_SHAPES = ['cls224-s1-inner', 'cls224-s2-inner', 'cls224-s3-inner',
                  'cls224-s4-inner', 'dense-s1-inner', 'dense-s3-inner']


def make_inputs(batch: int, d: int, h: int, w: int, rank: int,
                device: torch.device, dtype: torch.dtype
                ) -> Tuple[Dict[str, torch.Tensor], List[torch.Tensor]]:
    """(the scan's keyword inputs, the leaves their gradients go to)."""
    g = torch.Generator().manual_seed(0)

    def rand(*shape, std=1.0):
        return (torch.randn(*shape, generator=g) * std).to(device)

    proj = rand(batch, 4, rank + 2, h * w).to(dtype).requires_grad_(True)
    low, B, C = torch.split(proj, [rank, 1, 1], dim=2)
    params = dict(dt_weight=rand(4, d, rank, std=rank ** -0.5),
                  A=-torch.ones(4 * d, 1, device=device), D=rand(4 * d),
                  delta_bias=rand(4 * d, std=0.5) - 4)
    for value in params.values():
        value.requires_grad_(True)
    x = rand(batch, d, h, w).to(dtype).requires_grad_(True)
    return dict(x=x, dt_low=low, B=B, C=C, **params), [x, proj] + list(
        params.values())


def run_path(path: str, inputs: Dict[str, torch.Tensor]) -> torch.Tensor:
    """One call under autocast in the inputs' dtype, as in SS2D."""
    x = inputs['x']
    with torch.autocast(x.device.type, dtype=x.dtype,
                        enabled=x.dtype != torch.float32):
        if path == 'fused':
            return cross_selective_scan(**inputs, delta_softplus=True)
        if path.startswith('cross'):
            from mmsparx.ops import triton_cross_scan as kernels
            kernels.TRANSPOSE_COLUMNS = path != 'cross-strided'
            kernels.SEQUENTIAL = dict(cross=None, cross_seq=True).get(
                path.replace('-', '_'), False)
            try:
                return kernels.triton_cross_selective_scan(
                    **inputs, delta_softplus=True)
            finally:
                kernels.TRANSPOSE_COLUMNS, kernels.SEQUENTIAL = True, None
        return cross_selective_scan_generic(
            **inputs, delta_softplus=True, backend=path.split('-', 1)[1])


def measure(path: str, shape: str, args: argparse.Namespace,
            device: torch.device) -> dict:
    entry = SHAPES[shape]
    batch = args.batch or entry.batch
    d, h, w = entry.channels, entry.height, entry.width
    inputs, leaves = make_inputs(batch, d, h, w, entry.dt_rank, device,
                                 getattr(torch, args.dtype))
    grad = torch.randn(batch, d, h, w, device=device)
    row = dict(path=path, shape=shape, batch=batch, d=d, h=h, w=w)
    peak = PeakMemory(device)
    with torch.no_grad():
        row['forward_ms'] = time_runs(lambda: run_path(path, inputs),
                                      args.warmup, args.runs,
                                      device).median_ms

    def step():
        out = run_path(path, inputs)
        torch.autograd.grad(out, leaves, grad.to(out.dtype))

    row['train_ms'] = time_runs(step, args.warmup, args.runs,
                                device).median_ms
    if peak.cuda:
        row['peak_extra_mib'] = round(peak.mib(above_start=True), 1)
    return row


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--shapes', nargs='*', default=DEFAULT_SHAPES,
                        choices=inner_names())
    parser.add_argument('--paths', nargs='*', default=None,
                        help='default: fused and generic-chunked, plus '
                        'generic-triton on CUDA')
    parser.add_argument('--batch', type=int, default=None,
                        help='override every shape\'s batch')
    parser.add_argument('--dtype', default='bfloat16',
                        choices=['bfloat16', 'float16', 'float32'])
    parser.add_argument('--device', default='cuda' if
                        torch.cuda.is_available() else 'cpu')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--runs', type=int, default=5)
    parser.add_argument('--json', action='store_true')


def run(args: argparse.Namespace) -> int:
    device = torch.device(args.device)
    paths = args.paths or (['fused', 'generic-triton', 'generic-chunked']
                           if device.type == 'cuda' else
                           ['fused', 'generic-chunked'])
    with json_stdout(args.json):
        rows = [measure(path, shape, args, device) for shape in args.shapes
                for path in paths]
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f'SS2D scan, {args.dtype} inputs, {device}')
    for row in rows:
        print(f'{row["shape"]:<16} b{row["batch"]:<3} {row["path"]:<16}'
              f'forward {row["forward_ms"]:>8.2f} ms   fwd+bwd '
              f'{row["train_ms"]:>8.2f} ms   '
              f'{row.get("peak_extra_mib", "-")} MiB')
    return 0
