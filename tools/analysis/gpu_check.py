"""Run the GPU checks and write one JSON summary (``gpu_check.sh`` sets up
and calls this).

    python tools/analysis/gpu_check.py [--out FILE] [--device cuda]

Steps, each a subprocess with its own time limit, all recorded (return
code, seconds, output tail, parsed results): the scan tests on the device
(every GPU backend present: triton, chunked, mamba_ssm when importable),
``benchmark.py`` inference (batch 128, 224, AMP) and ``--train`` (batch 32,
AMP) for SparX-Mamba-T, Swin-T and ConvNeXt-T. Exits 1 when a step fails,
and at once, saying so, when the device is CUDA and there is none: a GPU
check never passes by skipping. ``--device cpu`` with small sizes checks
the script itself on a CPU machine.
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time
from typing import List, Optional

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

MODELS = ['sparx-mamba-t', 'swin-t', 'convnext-t']


def run_step(name: str, cmd: List[str], timeout: int,
             parse_json: bool = False) -> dict:
    """One step: its outcome, never an exception."""
    start = time.time()
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout)
        rc, out, err = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as exc:
        rc, out, err = 124, exc.stdout or '', f'timed out after {timeout} s'
        out = out if isinstance(out, str) else out.decode(errors='replace')
    step = dict(name=name, command=' '.join(cmd), returncode=rc,
                seconds=round(time.time() - start, 1),
                output_tail=(out + err)[-2000:])
    if parse_json and rc == 0:
        try:
            step['results'] = json.loads(out)
        except json.JSONDecodeError as exc:
            step['returncode'] = 1
            step['output_tail'] += f'\nnot JSON: {exc}'
    return step


def environment(device: str) -> dict:
    import torch

    from mmsparx.ops import available_backends
    info = dict(device=device, torch=torch.__version__,
                cuda=torch.version.cuda,
                scan_backends=list(available_backends(device)))
    if device == 'cuda':
        info['gpu'] = torch.cuda.get_device_name(0)
    return info


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('--out', default='work_dirs/gpu_check.json')
    parser.add_argument('--device', default='cuda', choices=['cuda', 'cpu'])
    parser.add_argument('--batch', type=int, default=128,
                        help='inference batch (default 128)')
    parser.add_argument('--train-batch', type=int, default=32)
    parser.add_argument('--input', type=int, nargs=2, default=(224, 224),
                        metavar=('H', 'W'))
    parser.add_argument('--scan-tests', default=None, metavar='EXPR',
                        help='pytest -k expression for the scan tests '
                        '(default: the device name)')
    args = parser.parse_args(argv)
    import torch
    if args.device == 'cuda' and not torch.cuda.is_available():
        print(f'gpu_check: CUDA is not available here (torch '
              f'{torch.__version__}, CUDA build {torch.version.cuda}): run '
              'it on a GPU machine; --device cpu checks the script itself',
              file=sys.stderr)
        return 1
    python = sys.executable
    bench = [python, 'tools/analysis/benchmark.py', *MODELS[:1], '--compare',
             *MODELS[1:], '--device', args.device, '--amp', '--json',
             '--input', *map(str, args.input)]
    steps = [
        run_step('scan tests', [
            python, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
            'tests/test_selective_scan.py', '-k',
            args.scan_tests or args.device], timeout=240),
        run_step('inference', bench + ['--batch', str(args.batch)],
                 timeout=240, parse_json=True),
        run_step('train', bench + ['--train', '--batch',
                                   str(args.train_batch)],
                 timeout=240, parse_json=True),
    ]
    summary = dict(environment(args.device), steps=steps,
                   passed=all(s['returncode'] == 0 for s in steps))
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(summary, f, indent=2)
    print(json.dumps(summary, indent=2))
    for step in steps:
        if step['returncode']:
            print(f'gpu_check: step {step["name"]!r} failed (return code '
                  f'{step["returncode"]}); its output is in {args.out}',
                  file=sys.stderr)
    return 0 if summary['passed'] else 1


if __name__ == '__main__':
    sys.exit(main())
