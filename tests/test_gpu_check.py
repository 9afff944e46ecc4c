"""The GPU check script: refuses to pass on a machine without CUDA, runs
every step end to end on CPU (tiny sizes) into one JSON summary, and turns
the steps' outputs into the issue's ratios."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from conftest import ROOT

TOOL = osp.join(ROOT, 'tools', 'analysis_tools', 'gpu_check.py')
sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis_tools'))
import gpu_check  # noqa: E402
from mmsparx.analysis import gpu_report as report  # noqa: E402


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
    """Every step on CPU at tiny sizes (128 for the steps: RT-DETR needs
    300 tokens for its queries); the baselines are mmpretrain's
    (timm is not installed here), ResNet-18 standing in for Swin-T, whose
    windows need 224."""
    summary_file = tmp_path / 'summary.json'
    out = subprocess.run(
        [sys.executable, TOOL, '--device', 'cpu', '--out', str(summary_file),
         '--batch', '1', '--train-batch', '1', '--input', '64', '64',
         '--dense-input', '64', '64', '--step-size', '128', '128',
         '--warmup', '0', '--runs', '1', '--sparx', 'sparx-mamba-t',
         '--swin', 'resnet-18', '--convnext', 'convnext-t',
         '--scan-tests', 'test_matches_reference_float32 and fused_cpu'],
        capture_output=True, text=True, cwd=ROOT,
        env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    summary = json.loads(summary_file.read_text())
    assert summary['passed'] and summary['device'] == 'cpu'
    assert 'fused_cpu' in summary['scan']['backends']
    assert summary['scan']['ss2d'] == 'the fused C++ cross scan'
    steps = {s['name']: s for s in summary['steps']}
    assert steps['scan tests']['results']['counts']['passed'] == 5
    assert steps['cuda test files']['skipped']
    off, on = steps['parity tf32 off'], steps['parity tf32 on']
    assert off['verdict']['within_tolerance']
    assert off['verdict']['tf32'] == dict(matmul_allow_tf32=False,
                                          cudnn_allow_tf32=False)
    # TF32 only changes CUDA's arithmetic: the second run is CUDA's
    # (its flags and its parse: the two tests below).
    assert on['skipped'] and on['returncode'] == 0
    assert 'TF32 is a CUDA setting' in on['note']
    for name in ('inference fp32', 'inference fp16', 'train bf16'):
        rows = steps[name]['results']
        assert [r['name'] for r in rows] == ['sparx-mamba-t', 'resnet-18',
                                             'convnext-t']
        assert all(r['img_per_s'] > 0 for r in rows)
    assert all(r['aten_ops'] > 0 for r in steps['inference fp32']['results'])
    assert all(r['saved_mib_per_image'] > 0
               for r in steps['train bf16']['results'])
    assert [r['mode'] for r in steps['dense step']['results']] == \
        ['dense', 'dense']
    for name in ('mask rcnn step', 'upernet step', 'rtdetr step'):
        rows = steps[name]['results']
        assert [r['role'] for r in rows] == ['ours', 'theirs']
        assert all(r['s_per_iter'] > 0 for r in rows), rows
    assert {r['norm'] for r in steps['norm statistics']['results']} == \
        {'aten', 'split'}
    assert [r['path'] for r in steps['ss2d kernels']['results']] == \
        ['fused', 'generic-chunked']
    ratios = {r['name']: r for r in summary['ratios']}
    assert all(r['value'] is not None for r in ratios.values()), ratios
    assert ratios['Mask R-CNN 1x s/iter SparX-T / Swin-T']['target'] == \
        '<= 1.3'
    assert 'ratio' in out.stdout and 'mask rcnn step' in out.stdout
    for name in ('compiled inference fp16', 'compiled train bf16'):
        assert steps[name]['skipped'] and steps[name]['returncode'] == 0
        assert '--only' in steps[name]['note']


def test_tf32_flags_are_set_and_reported():
    sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis_tools'))
    import sparx_parity
    before = (torch.backends.cuda.matmul.allow_tf32,
              torch.backends.cudnn.allow_tf32)
    try:
        assert sparx_parity.set_tf32('on') == dict(matmul_allow_tf32=True,
                                                   cudnn_allow_tf32=True)
        assert sparx_parity.set_tf32('off') == dict(
            matmul_allow_tf32=False, cudnn_allow_tf32=False)
    finally:
        (torch.backends.cuda.matmul.allow_tf32,
         torch.backends.cudnn.allow_tf32) = before


@pytest.mark.parametrize('must_pass', [True, False])
def test_parity_beyond_the_tolerance_fails_only_the_tf32_off_step(
        must_pass):
    rows = [dict(backend=b, max_abs_diff=[d], matmul_allow_tf32=True,
                 cudnn_allow_tf32=True)
            for b, d in (('fused', 2e-5), ('chunked', 3e-3))]
    step = dict(returncode=0)
    gpu_check.parse_parity(must_pass)(step, json.dumps(rows))
    assert step['verdict']['worst_by_backend'] == dict(fused=2e-5,
                                                       chunked=3e-3)
    assert step['verdict']['tf32'] == dict(matmul_allow_tf32=True,
                                           cudnn_allow_tf32=True)
    assert not step['verdict']['within_tolerance']
    assert step['returncode'] == (1 if must_pass else 0)
    assert ('EXCEEDS 1e-4' in step['note']) is must_pass


def test_pytest_output_is_parsed():
    output = ('..F.s\nFAILED tests/test_x.py::test_a[cuda] - AssertionError'
              '\nERROR tests/test_y.py::test_b\n'
              '1 failed, 3 passed, 1 skipped, 2 errors in 4.2s\n')
    parsed = report.parse_pytest(output)
    assert parsed['counts'] == dict(failed=1, passed=3, skipped=1, error=2)
    assert parsed['failing'] == ['tests/test_x.py::test_a[cuda]',
                                 'tests/test_y.py::test_b']


def test_ratios_against_the_targets():
    def bench(**rows):
        return dict(results=[dict(name=k, **v) for k, v in rows.items()])

    steps = {
        'train bf16': bench(**{
            'sparx-mamba-t': dict(img_per_s=40, peak_mem_mb=300,
                                  saved_mib_per_image=150),
            'timm:swin': dict(img_per_s=100, peak_mem_mb=100,
                              saved_mib_per_image=100)}),
        'mask rcnn step': dict(results=[
            dict(role='ours', s_per_iter=0.36, peak_mem_mb=16),
            dict(role='theirs', s_per_iter=0.3, peak_mem_mb=8)]),
    }
    got = {r['name']: r for r in report.ratios(
        steps, dict(swin='timm:swin', convnext='timm:convnext'))}
    assert got['train bf16 img/s SparX-T / Swin-T'] == dict(
        name='train bf16 img/s SparX-T / Swin-T', value=0.4,
        target='>= 0.5', met=False)
    assert got['saved MiB/image SparX-T / Swin-T']['met'] is True  # 1.5
    assert got['Mask R-CNN 1x s/iter SparX-T / Swin-T']['met'] is True
    assert got['Mask R-CNN 1x peak memory SparX-T / Swin-T']['met'] is False
    assert got['dense step s/iter SparX-T / ConvNeXt-T']['value'] is None
    text = report.table(dict(steps=[], ratios=list(got.values())))
    assert 'NO' in text and 'yes' in text


@pytest.mark.parametrize('device,fails', [('cpu', False), ('cuda', True)])
def test_missing_timm_is_skipped_on_cpu_and_fails_on_cuda(monkeypatch,
                                                          device, fails):
    monkeypatch.setattr(gpu_check, 'timm_available', lambda: False)
    runner = gpu_check.Runner(60, None)
    args = gpu_check.parse_args(['--device', device])
    kept = gpu_check.baselines(args, ['swin-t', 'timm:convnext_tiny'],
                               runner, 'backbones')
    assert kept == ['swin-t']
    (step, ) = runner.steps
    assert step['note'] == 'skipped: timm missing'
    assert bool(step['returncode']) is fails
