"""Throughput and peak memory, mmsparx variants next to baselines:
inference, with ``--train`` a full training step, with ``--dense`` a
backbone step at detection size.

    python tools/analysis_tools/benchmark.py sparx-mamba-t --compare swin-t timm:convnext_tiny --batch 8 --input 224 224 [--train | --dense] [--amp [--amp-dtype bfloat16]] [--ops] [--compile] [--json]

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
none). After warm-up, images/s is the median over timed runs. Peak memory
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
import gc
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

from mmsparx.analysis import (count_aten_ops, model_storages,  # noqa: E402
                              saved_bytes)
from mmsparx.analysis.timm_baseline import build_timm, is_timm_name  # noqa
from mmsparx.utils.cli import json_stdout  # noqa: E402
from mmsparx.utils.malloc import ENV as MALLOC_ENV  # noqa: E402
from mmsparx.models.variants import (BASELINES, VARIANTS,  # noqa: E402
                                     build_classifier, model_names)

# One optimizer for every model, so that the step costs compare: the
# settings of mmpretrain's imagenet_bs1024_adamw_swin schedule, which the
# SparX and SpaRTAN ImageNet configs inherit, and their max-norm 5 clipping.
ADAMW = dict(lr=1e-3, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999))
CLIP_MAX_NORM = 5.0
SAVED_BATCH = 2  # the batch of the saved-bytes and operator-count forwards
DTYPES = {'float16': torch.float16, 'bfloat16': torch.bfloat16}
# Backbone settings for --dense (four scales), as the detection configs
# set them; mmpretrain's ConvNeXt would otherwise pool its last map.
DENSE_BACKBONE = {
    'SparXMamba': dict(out_norm='ln', dmca_scale='learned'),
    'SparXSwin': dict(out_norm='ln'),
    'ConvNeXt': dict(gap_before_final_norm=False),
}


def model_name(value: str) -> str:
    """argparse type: a variants name or ``timm:NAME``."""
    if value in model_names() or is_timm_name(value):
        return value
    raise argparse.ArgumentTypeError(
        f'unknown model {value!r}: one of {model_names()} or timm:NAME')


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def amp_dtype(device: torch.device,
              requested: Optional[str] = None) -> torch.dtype:
    """``requested`` (float16 / bfloat16), else float16 where a GradScaler
    can guard it (CUDA) and bfloat16 on CPU, whose range needs no
    scaling."""
    if requested is not None:
        return DTYPES[requested]
    return torch.float16 if device.type == 'cuda' else torch.bfloat16


def build_model(name: str) -> nn.Module:
    """A classifier answering ``model(images, samples, mode)``."""
    return build_timm(name) if is_timm_name(name) else build_classifier(name)


def build_dense_backbone(name: str) -> nn.Module:
    """The backbone of ``name`` returning its four feature maps."""
    if is_timm_name(name):
        return build_timm(name, features_only=True)
    import mmsparx  # noqa: F401  registers the mmsparx backbones
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    cfg = dict(dict(VARIANTS, **BASELINES)[name]['backbone'],
               out_indices=(0, 1, 2, 3))
    cfg.update(DENSE_BACKBONE.get(cfg['type'], {}))
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return MODELS.build(cfg)


def num_classes(model: nn.Module) -> int:
    found = getattr(model, 'num_classes', None)
    return int(found) if found is not None else model.head.num_classes


def random_batch(model: nn.Module, batch: int, size: Sequence[int],
                 device: torch.device, seed: int = 0
                 ) -> Tuple[torch.Tensor, list]:
    """Random images and labels, as mmpretrain's data path hands them to
    ``ImageClassifier.forward(..., mode='loss')``; the labels index the
    model's own head (1000 or sparseswin's 100 classes)."""
    from mmpretrain.structures import DataSample
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, *size, generator=generator).to(device)
    labels = torch.randint(num_classes(model), (batch, ),
                           generator=generator)
    samples = [DataSample().set_gt_label(int(label)).to(device)
               for label in labels]
    return images, samples


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    """AdamW as in the ImageNet recipes (no per-parameter decay groups:
    they change no step's cost)."""
    return torch.optim.AdamW(model.parameters(), **ADAMW)


def loss_of(model: nn.Module, images: torch.Tensor, samples: list,
            amp: bool, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """The summed losses of one (autocast) forward."""
    dtype = dtype or amp_dtype(images.device)
    with torch.autocast(images.device.type, dtype=dtype, enabled=amp):
        losses = model(images, samples, mode='loss')
        return sum(value for key, value in losses.items() if 'loss' in key)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer,
               images: torch.Tensor, samples: list, amp: bool,
               scaler: Optional['torch.amp.GradScaler'] = None,
               dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """One training iteration as mmengine's AmpOptimWrapper runs it:
    autocast forward and loss, (scaled) backward, unscale, clip, step.
    Returns the detached loss (no sync: the caller times the step)."""
    optimizer.zero_grad(set_to_none=True)
    loss = loss_of(model, images, samples, amp, dtype)
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


def dense_loss(backbone: nn.Module, images: torch.Tensor, amp: bool,
               dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """Sum of the means of the backbone's maps: every scale gets a
    gradient, as a neck on top would give it."""
    dtype = dtype or amp_dtype(images.device)
    with torch.autocast(images.device.type, dtype=dtype, enabled=amp):
        maps = backbone(images)
        return sum(m.float().mean() for m in maps)


def _timed(step: Callable[[], object], warmup: int, runs: int,
           sync: Callable[[], None]) -> List[float]:
    """Seconds of every run: ``warmup`` untimed ones, then ``runs``."""
    times = []
    for _ in range(warmup + runs):
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return times


def compile_features(model: nn.Module) -> None:
    """``torch.compile`` in place (state-dict keys unchanged) on what
    computes the features: the backbone of an mmpretrain classifier, timm's
    network, or a dense backbone itself."""
    for name in ('backbone', 'model'):
        inner = getattr(model, name, None)
        if isinstance(inner, nn.Module):
            inner.compile()
            return
    model.compile()


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


def _fresh(device: torch.device) -> None:
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device, rss_before: float) -> float:
    if device.type == 'cuda':
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return round(_peak_rss_mb() - rss_before, 1)


def measure(name: str, batch: int, size, device: torch.device, amp: bool,
            warmup: int, runs: int, train: bool = False,
            dtype: Optional[torch.dtype] = None, ops: bool = False,
            dense: bool = False, compiled: bool = False) -> dict:
    """One row: images/s, peak memory and, for training, the saved MiB
    per image (and with ``ops`` the forward's aten calls)."""
    from mmsparx.ops.selective_scan import resolve_backend
    dtype = dtype or amp_dtype(device)
    train = train or dense
    _fresh(device)
    model = build_dense_backbone(name) if dense else build_model(name)
    # Not chained: a backbone's ``train()`` override may return None.
    model.to(device)
    model.train(train)
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    extra = {}
    if ops:
        count = op_count(model, size, device, dense)
        extra.update(aten_ops=count['all'], aten_ops_top=count['top'])
    if dense:
        extra.update(saved_memory(model, lambda n: functools.partial(
            dense_loss, model, torch.randn(n, 3, *size, device=device), amp,
            dtype)))
        images = torch.randn(batch, 3, *size, device=device)
    elif train:
        extra.update(saved_memory(model, lambda n: functools.partial(
            loss_of, model, *random_batch(model, n, size, device), amp,
            dtype)))
        images, samples = random_batch(model, batch, size, device)
        optimizer = make_optimizer(model)
        # GradScaler only for CUDA float16; bfloat16 needs none.
        scaler = (torch.amp.GradScaler('cuda') if amp and
                  device.type == 'cuda' and dtype == torch.float16 else None)
    else:
        images = torch.randn(batch, 3, *size, device=device)
    if compiled:
        compile_features(model)
        warmup = max(warmup, 1)  # the first call compiles
    _fresh(device)
    rss_before = _peak_rss_mb()
    if dense:
        times = _timed(lambda: dense_loss(model, images, amp,
                                          dtype).backward(),
                       warmup, runs, sync)
    elif train:
        times = _timed(lambda: train_step(model, optimizer, images, samples,
                                          amp, scaler, dtype),
                       warmup, runs, sync)
    else:
        with torch.inference_mode(), torch.autocast(
                device.type, dtype=dtype, enabled=amp):
            times = _timed(lambda: model(images, mode='tensor'), warmup,
                           runs, sync)
    if compiled:
        extra.update(compiled=True, first_call_s=round(times[0], 2))
    median = statistics.median(times[warmup:])
    uses_scan = name.startswith('sparx-mamba')
    mode = 'dense' if dense else 'train' if train else 'inference'
    return dict(name=name, mode=mode, batch=batch, input=list(size),
                img_per_s=batch / median, s_per_iter=median,
                peak_mem_mb=_peak(device, rss_before), device=str(device),
                amp=str(dtype).replace('torch.', '') if amp else None,
                scan_backend=resolve_backend(device) if uses_scan else None,
                **extra)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
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
    args = parser.parse_args(argv)
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
        return
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


if __name__ == '__main__':
    main()
