"""The kernels a forward launches on CUDA and the bytes they move, counted
on any machine (fake CUDA tensors, ``mmsparx.analysis.cuda_census``):

    python tools/analysis_tools/benchmark.py census sparx-mamba-t --compare swin-t convnext-t [--batch 128] [--input 224 224] [--amp float16|bfloat16|none] [--train | --dense] [--sms 132] [--top 8] [--json]

Inference by default (eval mode, ``torch.inference_mode``); ``--train``
counts a training step's forward (train mode, gradients recorded; autograd
cannot run the backward without a GPU); ``--dense`` the backbone alone
with its four maps, as ``benchmark.py model --dense`` builds it. ``--amp``
autocasts on the fake CUDA device (default float16; ``none``: float32).
``--sms`` is the GPU the scan's kernel choice is made for (an H200: 132).
Bytes are what each operator reads and writes, not what a kernel does
inside (a group norm's statistics pass, a Triton kernel's second pass):
a proxy for the memory-bound kernels, not a timing.
"""
from __future__ import annotations

import argparse
import json
from typing import List

import torch

from mmsparx.analysis.cuda_census import census
from mmsparx.analysis.model_steps import (DTYPES, build_dense_backbone,
                                          build_model, model_name)
from mmsparx.utils.cli import json_stdout


def census_row(name: str, batch: int, size: List[int], amp: str,
               train: bool, dense: bool, sms: int, top: int) -> dict:
    """One model's census as a JSON-ready row."""
    model = build_dense_backbone(name) if dense else build_model(name)
    forward = (lambda m, x: m(x)) if dense else \
        (lambda m, x: m(x, mode='tensor'))
    result = census(model,
                    lambda: torch.randn(batch, 3, *size, device='cuda'),
                    forward, train or dense,
                    None if amp == 'none' else DTYPES[amp], sms=sms)
    mode = 'dense' if dense else 'train forward' if train else 'inference'
    return dict(name=name, mode=mode, batch=batch, input=list(size),
                amp=amp, sms=sms, **result.summary(top))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('name', type=model_name)
    parser.add_argument('--compare', nargs='*', default=[], type=model_name)
    parser.add_argument('--batch', type=int, default=128)
    parser.add_argument('--input', type=int, nargs=2, default=(224, 224),
                        metavar=('H', 'W'))
    parser.add_argument('--amp', choices=sorted(DTYPES) + ['none'],
                        default='float16')
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument('--train', action='store_true')
    mode.add_argument('--dense', action='store_true')
    parser.add_argument('--sms', type=int, default=132)
    parser.add_argument('--top', type=int, default=8)
    parser.add_argument('--json', action='store_true')


def run(args: argparse.Namespace) -> int:
    with json_stdout(args.json):
        rows = [census_row(name, args.batch, args.input, args.amp,
                           args.train, args.dense, args.sms, args.top)
                for name in [args.name] + args.compare]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    first = rows[0]
    print(f"{first['mode']}: batch {args.batch}, {args.input[0]}x"
          f"{args.input[1]}, fake CUDA ({args.sms} SMs), amp={args.amp}")
    for row in rows:
        print(f"{row['name']:16s} {row['kernels']:6d} kernels "
              f"{row['gib']:9.2f} GiB  x{row['gib'] / first['gib']:.2f} of "
              f"{first['name']} bytes")
        for cat, v in row['categories'].items():
            print(f"    {cat:14s} {v['kernels']:6d} {v['gib']:9.2f} GiB")
    return 0
