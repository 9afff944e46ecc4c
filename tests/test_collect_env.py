"""The environment summary (mmsparx/analysis/collect_env.py): mmengine's
lines, the toolboxes' versions and whether mmsparx registered into each,
triton / mamba-ssm, and the scan backends chosen here."""
import os.path as osp
import runpy
import subprocess
import sys

import mmcv
import mmdet
import mmengine
import mmpretrain
import mmseg
import torch

import mmsparx
from conftest import ROOT
from mmsparx.analysis.collect_env import collect_env
from mmsparx.ops.scan_choice import describe, ss2d_backend
from mmsparx.ops.scan_report import package_state
from mmsparx.ops.selective_scan import available_backends, resolve_backend


def expected_lines() -> dict:
    """What the summary must say here, from the packages themselves."""
    cpu = torch.device('cpu')
    return {
        'PyTorch': torch.__version__,
        'MMEngine': mmengine.__version__,
        'MMCV': f'{mmcv.__version__} (compiled ops: yes)',
        'MMDetection': f'{mmdet.__version__} (mmsparx models registered)',
        'MMSegmentation': f'{mmseg.__version__} (mmsparx models registered)',
        'MMPreTrain': f'{mmpretrain.__version__} (mmsparx models '
                      'registered)',
        'mmsparx': f'{mmsparx.__version__} '
                   f'({osp.dirname(osp.abspath(mmsparx.__file__))})',
        'triton': package_state('triton', 'triton'),
        'mamba-ssm': package_state('mamba-ssm',
                                   'mamba_ssm.ops.selective_scan_interface'),
        'selective scan (cpu)': f'{resolve_backend(cpu)} (usable: '
                                f'{", ".join(available_backends(cpu))})',
        'SS2D scan (cpu)': describe(ss2d_backend(cpu)),
    }


def test_summary_names_versions_and_scan_backends():
    env = collect_env()
    assert env['Python'].startswith(sys.version.split()[0])
    assert env['CUDA available'] == torch.cuda.is_available()
    for key, value in expected_lines().items():
        assert env[key] == value, key
    assert ('selective scan (cuda)' in env) == torch.cuda.is_available()


def test_module_and_tool_print_the_lines(capsys):
    # The tool, in this process.
    runpy.run_path(osp.join(ROOT, 'tools', 'misc', 'collect_env.py'),
                   run_name='__main__')
    tool = capsys.readouterr().out.splitlines()
    # python -m, from outside the checkout.
    run = subprocess.run(
        [sys.executable, '-m', 'mmsparx.analysis.collect_env'],
        capture_output=True, text=True, timeout=300, cwd=osp.dirname(ROOT))
    assert run.returncode == 0, run.stderr[-2000:]
    printed = run.stdout.splitlines()
    for key, value in expected_lines().items():
        assert f'{key}: {value}' in tool, key
        assert f'{key}: {value}' in printed, key
    # The scan choice's log lines went to stderr, not into the summary.
    assert not any(' - mmengine - ' in line for line in printed)
