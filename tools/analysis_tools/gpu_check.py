"""Run the GPU checks and write one JSON summary
(``gpu_check.sh`` sets up and calls this).

    python tools/analysis_tools/gpu_check.py [--out FILE] [--device cuda] [--only STEP ...] [--budget S]

Steps, most important first, each a subprocess with its own time limit
inside one overall budget (default 310 s on CUDA), all recorded (return
code, seconds, output tail, parsed results); a failing step never stops
the later ones:

1. scan tests: ``pytest tests/test_selective_scan.py -k cuda``, and every
   ``tests/test_*cuda*.py`` / ``tests/test_triton*.py`` that exists
   (CUDA only): pass / fail counts and failing ids;
2. parity of SparX-Mamba with the authors' fixtures
   (``sparx_parity.py``) with TF32 off (must be within 1e-4) and, for
   reference on CUDA, on;
3. backbones (``benchmark.py model``): inference fp32 and fp16 at
   ``--batch`` (128), training bf16 at ``--train-batch`` (64), 224, for
   SparX-Mamba-T/S/B next to ``--swin`` and ``--convnext`` (timm's by
   default), with saved MiB/image and aten op counts; the dense backbone
   step (batch 2, 800x1344, bf16) SparX-T vs ``--convnext``;
4. whole training steps (``benchmark.py step``, fp32, batch 2): Mask
   R-CNN 1x SparX-T vs mmdet's Swin-T, UperNet SparX-T vs mmseg's Swin-T,
   RT-DETR R18vd vs SpaRTAN-T, with peak memory;
   then the group norm's statistics (``benchmark.py norm``): SparX's
   CUDA group norm against ATen's at SparX-T's stage-1 sizes;
5. opt-in (``--only``, past the 6-minute budget of the default run):
   ``compiled inference fp16`` and ``compiled train bf16``, SparX-T and
   ``--swin`` under ``torch.compile`` (``benchmark.py model --compile``),
   to set beside the eager rows of 3.

The summary ends with the ratios against the speed targets and a table.
Exits 1 when a step fails (targets missed do not fail it: they are
measurements), and at once when the device is CUDA and there is none: a
GPU check never passes by skipping. ``--device cpu`` with small sizes
checks the script on a CPU machine; there a ``timm:`` baseline is skipped
when timm is missing (on CUDA that is a failure).
"""
from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import os.path as osp
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

from mmsparx.analysis.gpu_report import (parity_verdict,  # noqa: E402
                                         parse_pytest, ratios, table)

SPARX = ['sparx-mamba-t', 'sparx-mamba-s', 'sparx-mamba-b']
STEP_PAIRS = {
    'mask rcnn step': ['configs/sparx/mask-rcnn_sparx-mamba-t_fpn_1x_coco.py',
                       'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'],
    'upernet step': [
        'configs/sparx/upernet_sparx-mamba-t_8xb2-160k_ade20k-512x512.py',
        'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_'
        'ade20k-512x512.py'],
    # ours: SpaRTAN-T, theirs: the R18vd reference detector.
    'rtdetr step': ['configs/rtdetr/rtdetr_spartan_t_72e_coco.py',
                    'configs/rtdetr/rtdetr_r18vd_72e_coco.py'],
}
# Run only when named in --only.
OPT_IN = ['compiled inference fp16', 'compiled train bf16']
STEP_NAMES = ['scan tests', 'cuda test files', 'parity tf32 off',
              'parity tf32 on', 'inference fp32', 'inference fp16',
              'train bf16', 'ss2d kernels', 'dense step', *STEP_PAIRS,
              'norm statistics', *OPT_IN]


class Runner:
    """Runs steps in order within one deadline, recording each."""

    def __init__(self, budget: float, only: Optional[List[str]]) -> None:
        self.deadline = time.time() + budget
        self.only = only
        self.steps: List[dict] = []

    def skip(self, name: str, why: str, failed: bool) -> dict:
        step = dict(name=name, skipped=True, note=why,
                    returncode=1 if failed else 0, seconds=0.0)
        self.steps.append(step)
        return step

    def run(self, name: str, cmd: List[str], limit: int,
            parse: Optional[Callable[[dict, str], None]] = None) -> dict:
        """One step: its outcome, never an exception. ``parse(step,
        stdout)`` adds results (and may fail the step)."""
        if self.only and name not in self.only:
            return self.skip(name, 'not selected (--only)', failed=False)
        if name in OPT_IN and not self.only:
            return self.skip(name, 'opt-in: --only ' + repr(name),
                             failed=False)
        left = int(self.deadline - time.time())
        if left < 10:
            return self.skip(name, 'out of time (--budget)', failed=True)
        timeout = min(limit, left)
        start = time.time()
        try:
            done = subprocess.run(cmd, cwd=ROOT, capture_output=True,
                                  text=True, timeout=timeout)
            rc, out, err = done.returncode, done.stdout, done.stderr
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout or ''
            out = out if isinstance(out, str) else out.decode(
                errors='replace')
            rc, err = 124, f'timed out after {timeout} s'
        step = dict(name=name, command=' '.join(cmd), returncode=rc,
                    seconds=round(time.time() - start, 1),
                    output_tail=(out + err)[-2000:] if rc or parse is None
                    else err[-600:])
        if parse is not None:
            try:
                parse(step, out)
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                step['returncode'] = step['returncode'] or 1
                step['note'] = f'unreadable output: {exc}'
                step['output_tail'] = (out + err)[-2000:]
        self.steps.append(step)
        return step


def parse_json_rows(step: dict, out: str) -> None:
    """JSON rows (even from a failed run, when it printed them)."""
    if step['returncode'] == 0 or out.lstrip().startswith('['):
        step['results'] = json.loads(out)


def parse_tests(step: dict, out: str) -> None:
    step['results'] = parse_pytest(out)
    counts = step['results']['counts']
    step['note'] = ', '.join(f'{v} {k}' for k, v in counts.items())
    if not counts.get('passed'):
        step['returncode'] = step['returncode'] or 1
        step['note'] += ' (nothing passed)'


def parse_parity(must_pass: bool) -> Callable[[dict, str], None]:
    def parse(step: dict, out: str) -> None:
        parse_json_rows(step, out)
        verdict = parity_verdict(step['results'])
        step['verdict'] = verdict
        worst = max(verdict['worst_by_backend'].values())
        step['note'] = f'worst {worst:.1e}, tf32 {verdict["tf32"]}'
        if must_pass and not verdict['within_tolerance']:
            step['returncode'] = step['returncode'] or 1
            step['note'] += ' EXCEEDS 1e-4'
    return parse


def parse_pair(step: dict, out: str) -> None:
    parse_json_rows(step, out)
    for row, role in zip(step['results'], ('ours', 'theirs')):
        row['role'] = role
    errors = [r['error'] for r in step['results'] if 'error' in r]
    step['note'] = '; '.join(errors)[:300]


def timm_available() -> bool:
    return importlib.util.find_spec('timm') is not None


def environment(device: str) -> dict:
    import torch

    from mmsparx.ops.scan_report import scan_paths
    info = dict(device=device, torch=torch.__version__,
                cuda=torch.version.cuda, timm=timm_available(),
                scan=scan_paths(torch.device(device)))
    if device == 'cuda':
        info['gpu'] = torch.cuda.get_device_name(0)
    return info


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('--out', default='work_dirs/gpu_check.json')
    parser.add_argument('--device', default='cuda', choices=['cuda', 'cpu'])
    parser.add_argument('--batch', type=int, default=128,
                        help='inference batch (default 128)')
    parser.add_argument('--train-batch', type=int, default=64)
    parser.add_argument('--input', type=int, nargs=2, default=(224, 224),
                        metavar=('H', 'W'))
    parser.add_argument('--dense-input', type=int, nargs=2,
                        default=(800, 1344), metavar=('H', 'W'))
    parser.add_argument('--step-size', type=int, nargs=2, metavar=('H', 'W'),
                        help='size of the step benchmarks (default: each '
                        "model's, e.g. Mask R-CNN 800x1344)")
    # 3 + 10 left the training and whole-detector steps out of the 310 s
    # on the first H200 run: 2 + 5 medians, as benchmark.py model's
    # defaults.
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--runs', type=int, default=5)
    parser.add_argument('--sparx', nargs='+', default=SPARX,
                        help='our backbones (the first is SparX-T in the '
                        'ratios)')
    parser.add_argument('--swin', default='timm:swin_tiny_patch4_window7_224')
    parser.add_argument('--convnext', default='timm:convnext_tiny')
    parser.add_argument('--scan-tests', default=None, metavar='EXPR',
                        help='pytest -k expression for the scan tests '
                        '(default: the device name)')
    parser.add_argument('--only', nargs='+', choices=STEP_NAMES,
                        help='run these steps alone')
    parser.add_argument('--budget', type=float, default=None,
                        help='seconds for all steps (default 310 on CUDA, '
                        '1800 on CPU)')
    return parser.parse_args(argv)


def baselines(args, names: List[str], runner: Runner, step: str
              ) -> List[str]:
    """``names`` without the timm ones when timm is missing, noting it
    (a failure on CUDA)."""
    if timm_available():
        return names
    missing = [n for n in names if n.startswith('timm:')]
    if missing:
        runner.skip(f'{step}: {", ".join(missing)}', 'skipped: timm missing',
                    failed=args.device == 'cuda')
    return [n for n in names if not n.startswith('timm:')]


def run_steps(args, runner: Runner) -> None:
    python, device = sys.executable, args.device
    runner.run('scan tests', [
        python, '-m', 'pytest', '-q', '-rfE', '-p', 'no:cacheprovider',
        'tests/test_selective_scan.py', '-k', args.scan_tests or device],
        limit=90, parse=parse_tests)
    files = sorted(set(glob.glob(osp.join(ROOT, 'tests', 'test_*cuda*.py'))
                       + glob.glob(osp.join(ROOT, 'tests',
                                            'test_triton*.py'))))
    if device != 'cuda':
        runner.skip('cuda test files', 'needs CUDA', failed=False)
    elif files:
        runner.run('cuda test files', [
            python, '-m', 'pytest', '-q', '-rfE', '-p', 'no:cacheprovider',
            *[osp.relpath(f, ROOT) for f in files]],
            limit=110, parse=parse_tests)
    for tf32 in ('off', 'on'):
        if tf32 == 'on' and device != 'cuda':
            runner.skip('parity tf32 on', 'TF32 is a CUDA setting: off CUDA '
                        'this is the tf32 off run', failed=False)
            continue
        runner.run(f'parity tf32 {tf32}', [
            python, 'tools/analysis_tools/sparx_parity.py', '--device', device,
            '--tf32', tf32, '--json'], limit=45,
            parse=parse_parity(must_pass=tf32 == 'off'))
    tool = [python, 'tools/analysis_tools/benchmark.py']
    bench = tool + ['model', '--device', device, '--json', '--warmup',
                    str(args.warmup), '--runs', str(args.runs)]
    models = args.sparx + baselines(args, [args.swin, args.convnext],
                                    runner, 'backbones')
    size = [*map(str, args.input)]
    fp16 = ['--amp', '--amp-dtype', 'float16'] if device == 'cuda' else \
        ['--amp']  # CPU autocast: bfloat16
    for name, extra, batch, limit in [
            ('inference fp32', ['--ops'], args.batch, 75),
            ('inference fp16', fp16, args.batch, 50),
            ('train bf16', ['--train', '--amp', '--amp-dtype', 'bfloat16'],
             args.train_batch, 90)]:
        runner.run(name, bench + [models[0], '--compare', *models[1:],
                                  '--input', *size, '--batch', str(batch),
                                  *extra], limit=limit,
                   parse=parse_json_rows)
    runner.run('ss2d kernels', tool + [
        'ss2d', '--device', device,
        '--json', '--warmup', str(args.warmup), '--runs', str(args.runs),
        '--shapes', *(['cls224-s1-inner', 'cls224-s3-inner',
                       'dense-s1-inner'] if device == 'cuda' else
                      ['cls224-s3-inner']), '--paths',
        *(['fused', 'cross-seq', 'cross-chunked', 'cross-strided',
           'generic-triton'] if device == 'cuda' else
          ['fused', 'generic-chunked']),
        *(['--batch', str(args.train_batch)] if device != 'cuda' else [])],
        limit=90, parse=parse_json_rows)
    dense = [args.sparx[0]] + baselines(args, [args.convnext], runner,
                                        'dense step')
    runner.run('dense step', bench + [
        dense[0], '--compare', *dense[1:], '--dense', '--amp', '--amp-dtype',
        'bfloat16', '--batch', '2', '--input', *map(str, args.dense_input)],
        limit=50, parse=parse_json_rows)
    step_size = ['--size', *map(str, args.step_size)] if args.step_size \
        else []
    for name, configs in STEP_PAIRS.items():
        runner.run(name, tool + [
            'step', *configs, '--device', device, '--batch', '2', '--warmup',
            str(args.warmup), '--runs', str(args.runs), '--json',
            *step_size], limit=70, parse=parse_pair)
    runner.run('norm statistics', tool + [
        'norm', '--device', device,
        '--json', '--warmup', str(args.warmup), '--runs', str(args.runs),
        *(['--shapes', 'cls224-s1'] if device != 'cuda' else [])],
        limit=30, parse=parse_json_rows)
    # SparX-T and the Swin baseline (absent when timm is missing).
    pair = [models[0], '--compare', *[n for n in models if n == args.swin]]
    for name, extra, batch in [
            ('compiled inference fp16', fp16, args.batch),
            ('compiled train bf16',
             ['--train', '--amp', '--amp-dtype', 'bfloat16'],
             args.train_batch)]:
        runner.run(name, bench + pair + [
            '--compile', '--input', *size, '--batch', str(batch), *extra],
            limit=240, parse=parse_json_rows)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    import torch
    if args.device == 'cuda' and not torch.cuda.is_available():
        print(f'gpu_check: CUDA is not available here (torch '
              f'{torch.__version__}, CUDA build {torch.version.cuda}): run '
              'it on a GPU machine; --device cpu checks the script itself',
              file=sys.stderr)
        return 1
    budget = args.budget or (310 if args.device == 'cuda' else 1800)
    runner = Runner(budget, args.only)
    start = time.time()
    run_steps(args, runner)
    steps: Dict[str, dict] = {s['name']: s for s in runner.steps}
    roles = dict(swin=args.swin, convnext=args.convnext,
                 **{'sparx-mamba-t': args.sparx[0]})
    summary = dict(environment(args.device), seconds=round(
        time.time() - start, 1), steps=runner.steps,
        ratios=ratios(steps, roles),
        passed=all(s['returncode'] == 0 for s in runner.steps))
    summary['targets_met'] = all(r['met'] is not False
                                 for r in summary['ratios'])
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(summary, f, indent=2)
    print(table(summary))
    for step in runner.steps:
        if step['returncode']:
            print(f'gpu_check: step {step["name"]!r} failed (return code '
                  f'{step["returncode"]}); its output is in {args.out}',
                  file=sys.stderr)
    return 0 if summary['passed'] else 1


if __name__ == '__main__':
    sys.exit(main())
