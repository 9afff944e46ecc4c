"""Forward + backward time of one selective scan, per backend.

    python tools/analysis_tools/benchmark.py scan --batch 2 --width 384 --length 3136 --d-state 1 [--warmup 1] [--repeat 3] [--json]

``width`` is the scan's channel count d (all directions together); B and C
have 4 groups as in SS2D. The reference backend is the per-token loop.
``seconds`` is the median of ``--repeat`` timed runs after ``--warmup``
untimed ones, the device synchronised around each
(``mmsparx.analysis.timing``); before the tools shared one timer it was
the minimum of the runs, without warm-up or synchronisation.
"""
from __future__ import annotations

import argparse
import json
from typing import Callable

import torch

from mmsparx.analysis.timing import time_runs
from mmsparx.ops import available_backends, selective_scan
from mmsparx.utils.cli import json_stdout


def scan_step(backend: str, args: argparse.Namespace,
              device: torch.device) -> Callable[[], None]:
    """One forward + backward of the scan on random inputs."""
    g = torch.Generator().manual_seed(0)
    b, d, length, n = args.batch, args.width, args.length, args.d_state

    def make(*shape, std=1.0):
        return (torch.randn(*shape, generator=g) * std).to(
            device).requires_grad_(True)

    inputs = dict(u=make(b, d, length), delta=make(b, d, length, std=0.5),
                  A=(-torch.rand(d, n, generator=g) - 0.5).to(device)
                  .requires_grad_(True),
                  B=make(b, 4, n, length), C=make(b, 4, n, length),
                  D=make(d), delta_bias=make(d, std=0.5))

    def step() -> None:
        out = selective_scan(**inputs, delta_softplus=True, backend=backend)
        out.sum().backward()
    return step


def time_backend(backend: str, args: argparse.Namespace,
                 device: torch.device) -> float:
    """Median seconds of the backend's forward + backward."""
    return time_runs(scan_step(backend, args, device), args.warmup,
                     args.repeat, device).median


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--width', type=int, default=384)
    parser.add_argument('--length', type=int, default=3136)
    parser.add_argument('--d-state', type=int, default=1)
    parser.add_argument('--warmup', type=int, default=1,
                        help='untimed runs first (default 1)')
    parser.add_argument('--repeat', '--runs', dest='repeat', type=int,
                        default=3, help='timed runs; the median is '
                        'reported (it was the minimum, without warm-up or '
                        'synchronisation, before the one timer)')
    parser.add_argument('--device', default='cuda' if
                        torch.cuda.is_available() else 'cpu')
    parser.add_argument('--json', action='store_true')


def run(args: argparse.Namespace) -> int:
    device = torch.device(args.device)
    with json_stdout(args.json):  # logs to stderr: stdout is the JSON
        rows = [dict(backend=name, seconds=time_backend(name, args, device),
                     device=str(device))
                for name in available_backends(device)]
    reference = next(r['seconds'] for r in rows
                     if r['backend'] == 'reference')
    for row in rows:
        row['speedup_vs_reference'] = reference / row['seconds']
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f'scan fwd+bwd, batch {args.batch}, width {args.width}, length '
          f'{args.length}, d_state {args.d_state}, {device}')
    for row in rows:
        print(f'{row["backend"]:<10}{row["seconds"]:>9.3f} s   '
              f'x{row["speedup_vs_reference"]:.1f} vs reference')
    return 0
