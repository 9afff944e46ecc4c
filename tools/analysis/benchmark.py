"""Throughput and peak memory, mmsparx variants next to baselines:
inference, or with ``--train`` a full training step.

    python tools/analysis/benchmark.py sparx-mamba-t --compare swin-t convnext-t --batch 8 --input 224 224 [--train] [--amp] [--json]

Each model is an ImageNet classifier (1000-class head unless its VARIANTS
entry says, e.g. sparseswin: 100). Inference: eval mode under
``torch.inference_mode``. ``--train``: train mode (drop path as configured),
one step is forward + the head's loss (mmpretrain's ``mode='loss'`` path on
random images and labels) + backward + grad clipping at 5 + AdamW (lr 1e-3,
wd 0.05: mmpretrain's ImageNet AdamW schedule); ``--amp`` adds a GradScaler
on GPUs (float16), none on CPU (bfloat16). After warm-up, images/s is the
median over timed runs. Peak memory is CUDA's max allocated on GPUs and the
growth of the process's peak RSS on CPU (models run in order, so later CPU
numbers can read low; compare GPU memory or run one model per call for CPU
memory).
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import resource
import statistics
import sys
import time
from typing import Callable, List, Optional, Sequence, Tuple

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from mmsparx.cli import json_stdout  # noqa: E402
from mmsparx.malloc import ENV as MALLOC_ENV  # noqa: E402
from mmsparx.models.variants import build_classifier, model_names  # noqa

# One optimizer for every model, so that the step costs compare: the
# settings of mmpretrain's imagenet_bs1024_adamw_swin schedule, which the
# SparX and SpaRTAN ImageNet configs inherit, and their max-norm 5 clipping.
ADAMW = dict(lr=1e-3, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999))
CLIP_MAX_NORM = 5.0


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def amp_dtype(device: torch.device) -> torch.dtype:
    """float16 where a GradScaler can guard it (CUDA); bfloat16 on CPU,
    whose range needs no scaling."""
    return torch.float16 if device.type == 'cuda' else torch.bfloat16


def random_batch(model: nn.Module, batch: int, size: Sequence[int],
                 device: torch.device, seed: int = 0
                 ) -> Tuple[torch.Tensor, list]:
    """Random images and labels, as mmpretrain's data path hands them to
    ``ImageClassifier.forward(..., mode='loss')``; the labels index the
    model's own head (1000 or sparseswin's 100 classes)."""
    from mmpretrain.structures import DataSample
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, *size, generator=generator).to(device)
    labels = torch.randint(model.head.num_classes, (batch, ),
                           generator=generator)
    samples = [DataSample().set_gt_label(int(label)).to(device)
               for label in labels]
    return images, samples


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    """AdamW as in the ImageNet recipes (no per-parameter decay groups:
    they change no step's cost)."""
    return torch.optim.AdamW(model.parameters(), **ADAMW)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer,
               images: torch.Tensor, samples: list, amp: bool,
               scaler: Optional['torch.amp.GradScaler'] = None
               ) -> torch.Tensor:
    """One training iteration as mmengine's AmpOptimWrapper runs it:
    autocast forward and loss, (scaled) backward, unscale, clip, step.
    Returns the detached loss (no sync: the caller times the step)."""
    device_type = images.device.type
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device_type, dtype=amp_dtype(images.device),
                        enabled=amp):
        losses = model(images, samples, mode='loss')
        loss = sum(value for key, value in losses.items() if 'loss' in key)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), CLIP_MAX_NORM)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return loss.detach()


def _timed(step: Callable[[], object], warmup: int, runs: int,
           sync: Callable[[], None]) -> List[float]:
    """Seconds of each run after ``warmup`` untimed ones."""
    times = []
    for index in range(warmup + runs):
        sync()
        start = time.perf_counter()
        step()
        sync()
        if index >= warmup:
            times.append(time.perf_counter() - start)
    return times


def measure(name: str, batch: int, size, device: torch.device, amp: bool,
            warmup: int, runs: int, train: bool = False) -> dict:
    from mmsparx.ops.selective_scan import resolve_backend
    model = build_classifier(name).to(device).train(train)
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    if train:
        images, samples = random_batch(model, batch, size, device)
        optimizer = make_optimizer(model)
        # GradScaler only for CUDA float16; bfloat16 on CPU needs none.
        scaler = (torch.amp.GradScaler('cuda')
                  if amp and device.type == 'cuda' else None)
    else:
        images = torch.randn(batch, 3, *size, device=device)
    if device.type == 'cuda':
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = _peak_rss_mb()
    if train:
        times = _timed(lambda: train_step(model, optimizer, images, samples,
                                          amp, scaler), warmup, runs, sync)
    else:
        with torch.inference_mode(), torch.autocast(
                device.type, dtype=amp_dtype(device), enabled=amp):
            times = _timed(lambda: model(images, mode='tensor'), warmup,
                           runs, sync)
    if device.type == 'cuda':
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = _peak_rss_mb() - rss_before
    uses_scan = name.startswith('sparx-mamba')
    return dict(name=name, mode='train' if train else 'inference',
                img_per_s=batch / statistics.median(times),
                peak_mem_mb=round(peak, 1), device=str(device),
                scan_backend=resolve_backend(device) if uses_scan else None)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('name', choices=model_names())
    parser.add_argument('--compare', nargs='*', default=[],
                        choices=model_names())
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--input', type=int, nargs=2, default=(224, 224),
                        metavar=('H', 'W'))
    parser.add_argument('--device', default='cuda' if
                        torch.cuda.is_available() else 'cpu')
    parser.add_argument('--amp', action='store_true',
                        help='float16 (GPU, with a GradScaler in --train) / '
                        'bfloat16 (CPU) autocast')
    parser.add_argument('--train', action='store_true',
                        help='time forward + loss + backward + AdamW step '
                        'in train mode instead of inference')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--runs', type=int, default=5)
    parser.add_argument('--json', action='store_true')
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    with json_stdout(args.json):  # logs to stderr: stdout is the JSON
        rows = [measure(n, args.batch, args.input, device, args.amp,
                        args.warmup, args.runs, train=args.train)
                for n in [args.name] + args.compare]
    if args.json:
        print(json.dumps(rows))
        return
    mode = ('train (forward + backward + AdamW step)' if args.train
            else 'inference')
    print(f'{mode}: batch {args.batch}, {args.input[0]}x{args.input[1]}, '
          f'{device}, amp={args.amp}, threads={torch.get_num_threads()}, '
          f'{MALLOC_ENV}={os.environ.get(MALLOC_ENV, "1")}')
    for row in rows:
        ratio = row['img_per_s'] / rows[0]['img_per_s']
        print(f'{row["name"]:<16}{row["img_per_s"]:>10.2f} img/s  '
              f'{row["peak_mem_mb"]:>10.1f} MB  x{ratio:.2f} of '
              f'{rows[0]["name"]}  scan: {row["scan_backend"]}')


if __name__ == '__main__':
    main()
