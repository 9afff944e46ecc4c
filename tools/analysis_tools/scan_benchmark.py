"""Forward + backward time of one selective scan, per backend.

    python tools/analysis_tools/scan_benchmark.py --batch 2 --width 384 --length 3136 --d-state 1 [--json]

``width`` is the scan's channel count d (all directions together); B and C
have 4 groups as in SS2D. The reference backend is the per-token loop.
"""
import argparse
import json
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))

import torch  # noqa: E402

from mmsparx.utils.cli import json_stdout  # noqa: E402
from mmsparx.ops import available_backends, selective_scan  # noqa: E402


def time_backend(backend: str, args, device) -> float:
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
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        out = selective_scan(**inputs, delta_softplus=True, backend=backend)
        out.sum().backward()
        if device.type == 'cuda':
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--width', type=int, default=384)
    parser.add_argument('--length', type=int, default=3136)
    parser.add_argument('--d-state', type=int, default=1)
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--device', default='cuda' if
                        torch.cuda.is_available() else 'cpu')
    parser.add_argument('--json', action='store_true')
    args = parser.parse_args(argv)
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
        return
    print(f'scan fwd+bwd, batch {args.batch}, width {args.width}, length '
          f'{args.length}, d_state {args.d_state}, {device}')
    for row in rows:
        print(f'{row["backend"]:<10}{row["seconds"]:>9.3f} s   '
              f'x{row["speedup_vs_reference"]:.1f} vs reference')


if __name__ == '__main__':
    main()
