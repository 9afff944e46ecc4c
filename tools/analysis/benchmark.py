"""Inference throughput and peak memory, mmsparx variants next to baselines.

    python tools/analysis/benchmark.py sparx-mamba-t --compare swin-t convnext-t --batch 8 --input 224 224 [--amp] [--json]

Each model is an ImageNet classifier (1000-class head unless its VARIANTS
entry says, e.g. sparseswin: 100) in eval mode under
``torch.inference_mode``; after warm-up, images/s is the median over timed
runs. Peak memory is CUDA's max allocated on GPUs and the growth of the
process's peak RSS on CPU (models run in order, so later CPU numbers can
read low; compare GPU memory or run one model per call for CPU memory).
"""
import argparse
import json
import os.path as osp
import resource
import statistics
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))

import torch  # noqa: E402

from mmsparx.cli import json_stdout  # noqa: E402
from mmsparx.models.variants import build_classifier, model_names  # noqa


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(name: str, batch: int, size, device: torch.device, amp: bool,
            warmup: int, runs: int) -> dict:
    from mmsparx.ops.selective_scan import resolve_backend
    model = build_classifier(name).to(device).eval()
    images = torch.randn(batch, 3, *size, device=device)
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    dtype = torch.float16 if device.type == 'cuda' else torch.bfloat16
    if device.type == 'cuda':
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = _peak_rss_mb()
    times = []
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype,
                                                enabled=amp):
        for step in range(warmup + runs):
            sync()
            start = time.perf_counter()
            model(images, mode='tensor')
            sync()
            if step >= warmup:
                times.append(time.perf_counter() - start)
    if device.type == 'cuda':
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = _peak_rss_mb() - rss_before
    uses_scan = name.startswith('sparx-mamba')
    return dict(name=name, img_per_s=batch / statistics.median(times),
                peak_mem_mb=round(peak, 1), device=str(device),
                scan_backend=resolve_backend(device) if uses_scan else None)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('name', choices=model_names())
    parser.add_argument('--compare', nargs='*', default=[],
                        choices=model_names())
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--input', type=int, nargs=2, default=(224, 224),
                        metavar=('H', 'W'))
    parser.add_argument('--device', default='cuda' if
                        torch.cuda.is_available() else 'cpu')
    parser.add_argument('--amp', action='store_true',
                        help='float16 (GPU) / bfloat16 (CPU) autocast')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--runs', type=int, default=5)
    parser.add_argument('--json', action='store_true')
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    with json_stdout(args.json):  # logs to stderr: stdout is the JSON
        rows = [measure(n, args.batch, args.input, device, args.amp,
                        args.warmup, args.runs)
                for n in [args.name] + args.compare]
    if args.json:
        print(json.dumps(rows))
        return
    print(f'batch {args.batch}, {args.input[0]}x{args.input[1]}, '
          f'{device}, amp={args.amp}, threads={torch.get_num_threads()}')
    for row in rows:
        ratio = row['img_per_s'] / rows[0]['img_per_s']
        print(f'{row["name"]:<16}{row["img_per_s"]:>10.2f} img/s  '
              f'{row["peak_mem_mb"]:>10.1f} MB  x{ratio:.2f} of '
              f'{rows[0]["name"]}  scan: {row["scan_backend"]}')


if __name__ == '__main__':
    main()
