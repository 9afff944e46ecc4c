"""The GPU check script: refuses to pass on a machine without CUDA, and
runs every step end to end (CPU, batch 1) into one JSON summary."""
import json
import os.path as osp
import subprocess
import sys

import pytest
import torch

from conftest import ROOT

TOOL = osp.join(ROOT, 'tools', 'analysis', 'gpu_check.py')


@pytest.mark.skipif(torch.cuda.is_available(), reason='this machine has '
                    'CUDA: the refusal is for machines without it')
def test_fails_loudly_without_cuda(tmp_path):
    out = subprocess.run([sys.executable, TOOL, '--out',
                          str(tmp_path / 's.json')], capture_output=True,
                         text=True, cwd=ROOT)
    assert out.returncode == 1
    assert 'CUDA is not available here' in out.stderr
    assert not (tmp_path / 's.json').exists()


def test_cpu_run_writes_the_summary(tmp_path):
    summary_file = tmp_path / 'summary.json'
    out = subprocess.run(
        [sys.executable, TOOL, '--device', 'cpu', '--out', str(summary_file),
         '--batch', '1', '--train-batch', '1',
         '--scan-tests', 'test_matches_reference_float32 and fused_cpu'],
        capture_output=True, text=True, cwd=ROOT,
        env=dict(__import__('os').environ, OMP_NUM_THREADS='1'))
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(summary_file.read_text())
    assert summary['passed'] and summary['device'] == 'cpu'
    assert 'fused_cpu' in summary['scan_backends']
    steps = {s['name']: s for s in summary['steps']}
    assert ' passed' in steps['scan tests']['output_tail']
    for name in ('inference', 'train'):
        rows = steps[name]['results']
        assert [r['name'] for r in rows] == ['sparx-mamba-t', 'swin-t',
                                             'convnext-t']
        assert all(r['img_per_s'] > 0 for r in rows)
