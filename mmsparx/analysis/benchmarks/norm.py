"""SparX's group norm (statistics from a reduction spread over the GPU,
``mmsparx.models.layers.GroupNorm``) against ATen's (one block per image
and group), measured in isolation at SparX-Mamba-T's stage-1 sizes:

    python tools/analysis_tools/benchmark.py norm [--shapes dense-s1 cls224-s1] [--device cuda] [--json]

Shapes: any of ``mmsparx.analysis.shapes`` (default: the stage-1 block
norm, C = 96, dense at 800x1344 and classifying at 224, and SS2D's output
norm, 2C = 192, dense). Input in bfloat16 under bf16 autocast, as in a
training step (both norms compute in float32); median milliseconds after
warm-up (``mmsparx.analysis.timing``) of the forward alone and of
forward + backward. On CPU both run ATen's norm (the module's CUDA path
is what differs), so there the rows only check the tool.
"""
from __future__ import annotations

import argparse
import json

import torch
from torch import nn

from mmsparx.analysis.shapes import SHAPES
from mmsparx.analysis.timing import time_runs
from mmsparx.models.layers import GroupNorm
from mmsparx.utils.cli import json_stdout

DEFAULT_SHAPES = ['dense-s1', 'dense-s1-inner', 'cls224-s1']
NORMS = {'aten': nn.GroupNorm, 'split': GroupNorm}


def measure(norm_name: str, shape: str, args: argparse.Namespace,
            device: torch.device) -> dict:
    entry = SHAPES[shape]
    batch, channels, h, w = (entry.batch, entry.channels, entry.height,
                             entry.width)
    norm = NORMS[norm_name](1, channels).to(device)
    x = torch.randn(batch, channels, h, w, device=device,
                    dtype=torch.bfloat16, requires_grad=True)
    grad = torch.randn(batch, channels, h, w, device=device)

    def forward():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return norm(x)

    def step():
        out = forward()
        torch.autograd.grad(out, [x, norm.weight, norm.bias],
                            grad.to(out.dtype))

    with torch.no_grad():
        forward_ms = time_runs(forward, args.warmup, args.runs,
                               device).median_ms
    train_ms = time_runs(step, args.warmup, args.runs, device).median_ms
    return dict(norm=norm_name, shape=shape, batch=batch, channels=channels,
                h=h, w=w, forward_ms=forward_ms, train_ms=train_ms)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--shapes', nargs='*', default=DEFAULT_SHAPES,
                        choices=list(SHAPES))
    parser.add_argument('--device', default='cuda' if
                        torch.cuda.is_available() else 'cpu')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--runs', type=int, default=5)
    parser.add_argument('--json', action='store_true')


def run(args: argparse.Namespace) -> int:
    device = torch.device(args.device)
    with json_stdout(args.json):
        rows = [measure(norm, shape, args, device) for shape in args.shapes
                for norm in NORMS]
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f'GroupNorm(1, C), bf16 autocast, {device}')
    for row in rows:
        print(f'{row["shape"]:<15} b{row["batch"]:<3} {row["norm"]:<6}'
              f'forward {row["forward_ms"]:>8.3f} ms   fwd+bwd '
              f'{row["train_ms"]:>8.3f} ms')
    return 0
