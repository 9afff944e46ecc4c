"""ONNX Runtime vs PyTorch latency on this CPU, one family per row.

    python tools/deployment/benchmark_onnx.py [CONFIG ...] [--shape H W] \\
        [--runs N] [--threads T] [--json]

Default: SparX-Mamba-T ImageNet at 224, RT-DETR-R18vd and RT-DETR-SpaRTAN-T
at 640x640, UperNet SparX-Mamba-T at 512x512, each at batch 1. Weights are
the configs' initial ones (latency does not depend on them). Each model is
exported to a temporary file, warmed up once, then timed ``--runs`` times
in each runtime, alternating; the medians are printed. PyTorch runs the
model as mmsparx does in inference (its C++ CPU kernels where built).
"""
import argparse
import json
import os.path as osp
import statistics
import sys
import tempfile
import time

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

from mmsparx.utils.cli import json_stdout  # noqa: E402

DEFAULTS = [
    'configs/sparx/sparx-mamba-t_16xb128_in1k.py',
    'configs/rtdetr/rtdetr_r18vd_72e_coco.py',
    'configs/rtdetr/rtdetr_spartan_t_72e_coco.py',
    'configs/sparx/upernet_sparx-mamba-t_8xb2-160k_ade20k-512x512.py',
]


def time_pair(config: str, shape, runs: int, threads: int) -> dict:
    """Median milliseconds per batch-1 forward in PyTorch and ORT."""
    from mmsparx.deploy import restored_default_scope
    with restored_default_scope():
        return _time_pair(config, shape, runs, threads)


def _time_pair(config, shape, runs, threads) -> dict:
    import torch

    from mmsparx.deploy import prepare
    from mmsparx.deploy.compare import check_inputs
    from mmsparx.deploy.onnx_export import export_onnx, session
    from mmsparx.deploy.wrappers import SIGNATURES

    module, task, model, shape = prepare(config, None, shape)
    inputs = check_inputs(model, task, shape, 1)
    names, outputs = SIGNATURES[task]
    with tempfile.TemporaryDirectory() as folder:
        path = osp.join(folder, 'model.onnx')
        start = time.perf_counter()
        export_onnx(module, inputs, path, names, outputs)
        export_s = time.perf_counter() - start
        ort = session(path, threads)
        feeds = {n: t.numpy() for n, t in zip(names, inputs)}
        torch_ms, ort_ms = [], []
        with torch.no_grad():
            module(*inputs)
            ort.run(None, feeds)
            for _ in range(runs):
                start = time.perf_counter()
                module(*inputs)
                torch_ms.append(1e3 * (time.perf_counter() - start))
                start = time.perf_counter()
                ort.run(None, feeds)
                ort_ms.append(1e3 * (time.perf_counter() - start))
    return dict(config=config, task=task, input=list(shape),
                pytorch_ms=statistics.median(torch_ms),
                onnxruntime_ms=statistics.median(ort_ms),
                export_s=export_s)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('configs', nargs='*', default=DEFAULTS)
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'))
    parser.add_argument('--runs', type=int, default=5)
    parser.add_argument('--threads', type=int, default=None,
                        help='threads for both runtimes (default: torch\'s)')
    parser.add_argument('--json', action='store_true')
    args = parser.parse_args(argv)
    import torch
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    rows = []
    with json_stdout(args.json):
        for config in args.configs:
            rows.append(time_pair(config, args.shape, args.runs, threads))
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f'{threads} threads, batch 1, median of {args.runs} runs')
    print(f'{"config":<66}{"input":>9}{"PyTorch ms":>12}{"ORT ms":>10}'
          f'{"ORT/PT":>8}{"export s":>10}')
    for row in rows:
        size = 'x'.join(str(v) for v in row['input'])
        print(f'{row["config"]:<66}{size:>9}{row["pytorch_ms"]:>12.1f}'
              f'{row["onnxruntime_ms"]:>10.1f}'
              f'{row["onnxruntime_ms"] / row["pytorch_ms"]:>8.2f}'
              f'{row["export_s"]:>10.1f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
