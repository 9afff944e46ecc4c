"""SparX's group norm (statistics from a reduction spread over the GPU,
``mmsparx.models.layers.GroupNorm``) against ATen's (one block per image
and group), measured in isolation at SparX-Mamba-T's stage-1 sizes:

    python tools/analysis_tools/norm_benchmark.py [--shapes dense-s1 cls224-s1] [--device cuda] [--json]

Input in bfloat16 under bf16 autocast, as in a training step (both norms
compute in float32); median milliseconds of the forward alone and of
forward + backward. On CPU both run ATen's norm (the module's CUDA path
is what differs), so there the rows only check the script.
"""
import argparse
import json
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(
    __file__)))))
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from mmsparx.utils.cli import json_stdout  # noqa: E402
from mmsparx.models.layers import GroupNorm  # noqa: E402
from ss2d_benchmark import timed  # noqa: E402

# name: (batch, channels, H, W): SparX-T's stage-1 block norm (C = 96) and
# SS2D's output norm (2C = 192), dense at 800x1344 and classifying at 224.
SHAPES = {
    'dense-s1': (2, 96, 200, 336),
    'dense-s1-inner': (2, 192, 200, 336),
    'cls224-s1': (64, 96, 56, 56),
}
NORMS = {'aten': nn.GroupNorm, 'split': GroupNorm}


def measure(norm_name: str, shape: str, args, device) -> dict:
    batch, channels, h, w = SHAPES[shape]
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
        forward_ms = timed(forward, device, args.warmup, args.runs)
    return dict(norm=norm_name, shape=shape, batch=batch, channels=channels,
                h=h, w=w, forward_ms=forward_ms,
                train_ms=timed(step, device, args.warmup, args.runs))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('--shapes', nargs='*', default=list(SHAPES),
                        choices=list(SHAPES))
    parser.add_argument('--device', default='cuda' if
                        torch.cuda.is_available() else 'cpu')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--runs', type=int, default=5)
    parser.add_argument('--json', action='store_true')
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    with json_stdout(args.json):
        rows = [measure(norm, shape, args, device) for shape in args.shapes
                for norm in NORMS]
    if args.json:
        print(json.dumps(rows))
        return
    print(f'GroupNorm(1, C), bf16 autocast, {device}')
    for row in rows:
        print(f'{row["shape"]:<15} b{row["batch"]:<3} {row["norm"]:<6}'
              f'forward {row["forward_ms"]:>8.3f} ms   fwd+bwd '
              f'{row["train_ms"]:>8.3f} ms')


if __name__ == '__main__':
    main()
