"""Throughput and peak memory, mmsparx variants next to baselines:
inference, with ``--train`` a full training step, with ``--dense`` a
backbone step at detection size.

    python tools/analysis_tools/benchmark.py model sparx-mamba-t --compare swin-t timm:convnext_tiny --batch 8 --input 224 224 [--train | --dense] [--amp [--amp-dtype bfloat16]] [--ops] [--compile] [--json]

Models: the names of ``mmsparx.models.variants`` (ImageNet classifiers,
1000-class heads unless the entry says, e.g. sparseswin: 100), or
``timm:NAME``, timm's model without weights (timm is imported only then).
Inference: eval mode under ``torch.inference_mode``. ``--train``: train
mode (drop path as configured), one step is forward + loss (mmpretrain's
``mode='loss'``; cross-entropy on the logits for timm) on random images
and labels + backward + grad clipping at 5 + AdamW (lr 1e-3, wd 0.05:
mmpretrain's ImageNet AdamW schedule). ``--dense``: the backbone alone
with its four scales (timm: ``features_only``), forward + backward of the
sum of the maps' means, no optimizer: the backbone's share of a detector
step (e.g. ``--batch 2 --input 800 1344 --amp --amp-dtype bfloat16``).

``--amp`` autocasts to ``--amp-dtype``: float16 on CUDA by default (with a
GradScaler when training), bfloat16 on CPU (no scaler: its range needs
none). After warm-up, images/s is the median over timed runs
(``mmsparx.analysis.timing``). Peak memory (``mmsparx.analysis.peak_memory``)
is CUDA's max allocated on GPUs and the growth of the process's peak RSS on
CPU (models run in order, so later CPU numbers can read low; compare GPU
memory or run one model per call for CPU memory).

Training rows (``--train``, ``--dense``) also give ``saved_mib_per_image``:
the MiB per image that the forward keeps for backward under the run's
autocast (``mmsparx.analysis.saved_bytes``: each storage once, parameters
and buffers left out), measured on its own batch-2 forward before timing.
That total includes what does not grow with the batch (autocast's
low-precision copies of the weights: ~27 MiB per image for a 28 M-parameter
model at batch 2), so a batch-4 forward is measured too: ``saved_mib_slope``
is the growth per added image (the activations proper) and
``saved_mib_fixed`` the rest.
``--ops`` adds ``aten_ops`` and ``aten_ops_top``: the aten operator events
of one batch-2 eval forward in float32 under ``torch.inference_mode``,
counted by the CPU profiler (``mmsparx.analysis.count_aten_ops``): all,
nested calls included, and those the model's code calls directly.
``--compile`` times the model with its backbone (timm: the whole network)
under ``torch.compile`` (Inductor, default mode); the first call, which
compiles, is ``first_call_s``; saved bytes and op counts stay eager's.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
from typing import Callable, Optional

import torch
from torch import nn

from mmsparx.analysis.model_steps import (DTYPES, amp_dtype,
                                          build_dense_backbone, build_model,
                                          compile_features, dense_loss,
                                          loss_of, make_optimizer,
                                          model_name, random_batch,
                                          train_step)
from mmsparx.analysis.op_count import count_aten_ops
from mmsparx.analysis.peak_memory import PeakMemory
from mmsparx.analysis.saved_memory import model_storages, saved_bytes
from mmsparx.analysis.timing import time_runs
from mmsparx.utils.cli import json_stdout
from mmsparx.utils.malloc import ENV as MALLOC_ENV

SAVED_BATCH = 2  # the batch of the saved-bytes and operator-count forwards


def saved_memory(model: nn.Module,
                 loss: Callable[[int], Callable[[], object]]) -> dict:
    """What the forward ``loss(batch)()`` keeps for backward: MiB per
    image at batch 2, and split by a batch-4 forward into the part that
    grows with the batch (MiB per image) and the part that does not."""
    exclude = model_storages(model)
    small, large = SAVED_BATCH, 2 * SAVED_BATCH
    at_small = saved_bytes(loss(small), exclude) / 2**20
    at_large = saved_bytes(loss(large), exclude) / 2**20
    slope = (at_large - at_small) / (large - small)
    return dict(saved_mib_per_image=round(at_small / small, 2),
                saved_mib_slope=round(slope, 2),
                saved_mib_fixed=round(at_small - small * slope, 2))


def op_count(model: nn.Module, size, device: torch.device,
             dense: bool = False) -> dict:
    """aten events (all, top level) of one batch-2 eval forward in
    float32; after one untimed forward, so that lazy set-up is not
    counted."""
    images = torch.randn(SAVED_BATCH, 3, *size, device=device)
    was_training = model.training
    model.eval()
    forward = ((lambda: model(images)) if dense else
               (lambda: model(images, mode='tensor')))
    with torch.inference_mode():
        forward()
        count = count_aten_ops(forward)
    model.train(was_training)
    return count


def timed_step(model: nn.Module, batch: int, size,
               device: torch.device, amp: bool, dtype: torch.dtype,
               train: bool, dense: bool, extra: dict) -> Callable[[], object]:
    """The step to time (inputs made, saved memory measured into
    ``extra`` for training rows)."""
    if dense:
        extra.update(saved_memory(model, lambda n: functools.partial(
            dense_loss, model, torch.randn(n, 3, *size, device=device), amp,
            dtype)))
        images = torch.randn(batch, 3, *size, device=device)
        return lambda: dense_loss(model, images, amp, dtype).backward()
    if train:
        extra.update(saved_memory(model, lambda n: functools.partial(
            loss_of, model, *random_batch(model, n, size, device), amp,
            dtype)))
        images, samples = random_batch(model, batch, size, device)
        optimizer = make_optimizer(model)
        # GradScaler only for CUDA float16; bfloat16 needs none.
        scaler = (torch.amp.GradScaler('cuda') if amp and
                  device.type == 'cuda' and dtype == torch.float16 else None)
        return lambda: train_step(model, optimizer, images, samples, amp,
                                  scaler, dtype)
    images = torch.randn(batch, 3, *size, device=device)

    def infer():
        with torch.inference_mode(), torch.autocast(
                device.type, dtype=dtype, enabled=amp):
            return model(images, mode='tensor')
    return infer


def measure(name: str, batch: int, size, device: torch.device, amp: bool,
            warmup: int, runs: int, train: bool = False,
            dtype: Optional[torch.dtype] = None, ops: bool = False,
            dense: bool = False, compiled: bool = False) -> dict:
    """One row: images/s, peak memory and, for training, the saved MiB
    per image (and with ``ops`` the forward's aten calls)."""
    from mmsparx.ops.selective_scan import resolve_backend
    dtype = dtype or amp_dtype(device)
    train = train or dense
    PeakMemory(device)  # frees what earlier models left before building
    model = build_dense_backbone(name) if dense else build_model(name)
    # Not chained: a backbone's ``train()`` override may return None.
    model.to(device)
    model.train(train)
    extra = {}
    if ops:
        count = op_count(model, size, device, dense)
        extra.update(aten_ops=count['all'], aten_ops_top=count['top'])
    step = timed_step(model, batch, size, device, amp, dtype, train, dense,
                      extra)
    if compiled:
        compile_features(model)
        warmup = max(warmup, 1)  # the first call compiles
    peak = PeakMemory(device)
    timing = time_runs(step, warmup, runs, device)
    if compiled:
        extra.update(compiled=True,
                     first_call_s=round(timing.warmup_seconds[0], 2))
    uses_scan = name.startswith('sparx-mamba')
    mode = 'dense' if dense else 'train' if train else 'inference'
    return dict(name=name, mode=mode, batch=batch, input=list(size),
                img_per_s=batch / timing.median, s_per_iter=timing.median,
                peak_mem_mb=round(peak.mib(), 1), device=str(device),
                amp=str(dtype).replace('torch.', '') if amp else None,
                scan_backend=resolve_backend(device) if uses_scan else None,
                **extra)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('name', type=model_name)
    parser.add_argument('--compare', nargs='*', default=[], type=model_name)
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--input', type=int, nargs=2, default=(224, 224),
                        metavar=('H', 'W'))
    parser.add_argument('--device', default='cuda' if
                        torch.cuda.is_available() else 'cpu')
    parser.add_argument('--amp', action='store_true',
                        help='autocast to --amp-dtype (with a GradScaler '
                        'for float16 training)')
    parser.add_argument('--amp-dtype', choices=sorted(DTYPES),
                        help='default: float16 on CUDA, bfloat16 on CPU')
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument('--train', action='store_true',
                      help='time forward + loss + backward + AdamW step '
                      'in train mode instead of inference')
    mode.add_argument('--dense', action='store_true',
                      help='time the backbone alone (four scales), '
                      'forward + backward, no optimizer')
    parser.add_argument('--ops', action='store_true',
                        help='count the aten ops of a batch-2 forward')
    parser.add_argument('--compile', action='store_true',
                        help='time the backbone under torch.compile')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--runs', type=int, default=5)
    parser.add_argument('--json', action='store_true')


def run(args: argparse.Namespace) -> int:
    device = torch.device(args.device)
    dtype = amp_dtype(device, args.amp_dtype)
    with json_stdout(args.json):  # logs to stderr: stdout is the JSON
        rows = [measure(n, args.batch, args.input, device, args.amp,
                        args.warmup, args.runs, train=args.train,
                        dtype=dtype, ops=args.ops, dense=args.dense,
                        compiled=args.compile)
                for n in [args.name] + args.compare]
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f'{rows[0]["mode"]}: batch {args.batch}, '
          f'{args.input[0]}x{args.input[1]}, {device}, '
          f'amp={rows[0]["amp"]}, threads={torch.get_num_threads()}, '
          f'{MALLOC_ENV}={os.environ.get(MALLOC_ENV, "1")}')
    for row in rows:
        ratio = row['img_per_s'] / rows[0]['img_per_s']
        saved = row.get('saved_mib_per_image')
        ops = row.get('aten_ops')
        print(f'{row["name"]:<32}{row["img_per_s"]:>10.2f} img/s  '
              f'{row["peak_mem_mb"]:>10.1f} MB  x{ratio:.2f} of '
              f'{rows[0]["name"]}  scan: {row["scan_backend"]}'
              + (f'  saved {saved:.1f} MiB/img' if saved is not None else '')
              + (f'  {ops} aten ops' if ops is not None else '')
              + (f'  compiled (first call {row["first_call_s"]:.1f} s)'
                 if row.get('compiled') else ''))
    return 0

