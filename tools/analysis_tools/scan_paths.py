"""Which kernels run the selective scan and SS2D's cross scan here.

    python tools/analysis_tools/scan_paths.py            # every device here
    python tools/analysis_tools/scan_paths.py --device cuda --json

Prints, per device: the usable backends (fastest first), the plain
selective scan's choice, SS2D's path (on CUDA the fused Triton cross scan,
timed for inference against the generic path on mamba-ssm where it is
installed), mamba-ssm's and triton's versions (or why they do not import),
and whether the GPU kernels check themselves on first use.
"""
import argparse
import json
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__)))))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', choices=['cpu', 'cuda'],
                        help='one device (default: cpu, and cuda if here)')
    parser.add_argument('--json', action='store_true',
                        help='print one JSON object per device')
    args = parser.parse_args(argv)
    import torch

    from mmsparx.ops.scan_report import scan_paths
    from mmsparx.utils.cli import json_stdout
    devices = [args.device] if args.device else ['cpu'] + (
        ['cuda'] if torch.cuda.is_available() else [])
    with json_stdout(args.json):
        found = [scan_paths(torch.device(d)) for d in devices]
    for paths in found:
        if args.json:
            print(json.dumps(paths))
            continue
        width = max(len(k) for k in paths)
        for key, value in paths.items():
            if isinstance(value, list):
                value = ', '.join(value)
            print(f'{key:<{width}}  {value}')
        print()


if __name__ == '__main__':
    main()
