"""SS2D's CUDA path choice: fused whenever gradients are kept; for
inference the faster of the two, timed once per shape and kept (a fake
clock here: only a GPU times the kernels), else the H200 rule."""
import pytest
import torch

from mmsparx.analysis.cuda_census import fake_cuda
from mmsparx.ops import scan_choice


@pytest.fixture
def clock(monkeypatch):
    """Times per path, and the calls timed."""
    timed = []
    times = {}

    def fake_time(fn):
        timed.append(fn.__name__)
        return times[fn.__name__]

    monkeypatch.setattr(scan_choice, '_time_ms', fake_time)
    monkeypatch.setattr(scan_choice, '_can_time', lambda x: True)
    monkeypatch.setattr(scan_choice, '_choices', {})
    return times, timed


def fused():
    return None


def generic():
    return None


@pytest.mark.parametrize('generic_ms,expected', [(1.0, False), (9.0, True)])
def test_inference_takes_the_faster_once_per_shape(clock, generic_ms,
                                                   expected):
    times, timed = clock
    times.update(fused=5.0, generic=generic_ms)
    with fake_cuda(), torch.inference_mode():
        x = torch.empty(64, 192, 56, 56, device='cuda')
        assert scan_choice.fused_pays(x, fused, generic) is expected
        assert scan_choice.fused_pays(x, fused, generic) is expected
        assert timed == ['fused', 'generic']  # the second call is cached
        other = torch.empty(2, 192, 56, 56, device='cuda')
        scan_choice.fused_pays(other, fused, generic)
        assert len(timed) == 4  # a new shape is timed afresh


def test_generic_out_of_memory_leaves_fused(clock, monkeypatch):
    times, timed = clock
    times.update(fused=5.0)
    monkeypatch.setattr(torch.cuda, 'empty_cache', lambda: None)

    def oom():
        raise torch.cuda.OutOfMemoryError('the four copies do not fit')

    real = scan_choice._time_ms
    monkeypatch.setattr(scan_choice, '_time_ms',
                        lambda fn: oom() if fn is generic else real(fn))
    with fake_cuda(), torch.inference_mode():
        x = torch.empty(64, 192, 56, 56, device='cuda')
        assert scan_choice.fused_pays(x, fused, generic)
    assert timed == ['fused']


def test_training_and_cpu_take_fused_untimed(clock):
    _, timed = clock
    with fake_cuda():
        x = torch.empty(64, 192, 56, 56, device='cuda')
        assert scan_choice.fused_pays(x, fused, generic)  # grad enabled
    with torch.no_grad():
        assert scan_choice.fused_pays(torch.empty(64, 192, 8, 8), fused,
                                      generic)
    assert timed == []


def test_without_timing_the_rule_decides(monkeypatch):
    monkeypatch.setattr(scan_choice, '_choices', {})
    # Fake tensors compute nothing, so they are never timed.
    with fake_cuda(sms=132), torch.inference_mode():
        big = torch.empty(64, 192, 56, 56, device='cuda')  # 23 per SM
        small = torch.empty(2, 192, 200, 336, device='cuda')  # 0.7 per SM
        assert not scan_choice.fused_pays(big, fused, generic)
        assert scan_choice.fused_pays(small, fused, generic)
    assert scan_choice._choices == {}


@pytest.mark.parametrize('mamba', [False, True])
def test_ss2d_takes_the_fused_triton_scan_over_mamba_ssm(monkeypatch, mamba):
    """The stated rule: on CUDA ``auto`` runs SS2D on the fused Triton
    cross scan whether or not mamba-ssm is installed; the generic path it
    is timed against for inference uses mamba-ssm where installed. A
    backend named by the caller or the environment is kept."""
    import importlib
    pytest.importorskip('triton')
    scan = importlib.import_module('mmsparx.ops.selective_scan')
    monkeypatch.setattr(scan, '_mamba_fn', lambda: object() if mamba
                        else None)
    monkeypatch.delenv(scan.BACKEND_ENV, raising=False)
    cuda = torch.device('cuda')
    assert scan.resolve_backend(cuda) == ('mamba_ssm' if mamba else 'triton')
    assert scan_choice.ss2d_backend(cuda) == 'triton'
    generic = 'mamba_ssm' if mamba else 'triton'
    assert scan_choice.describe('triton') == (
        'the fused Triton cross scan (for inference timed per shape '
        f'against the generic path on {generic})')
    if mamba:
        assert scan_choice.ss2d_backend(cuda, 'mamba_ssm') == 'mamba_ssm'
        monkeypatch.setenv(scan.BACKEND_ENV, 'mamba_ssm')
        assert scan_choice.ss2d_backend(cuda) == 'mamba_ssm'
    assert scan_choice.describe('chunked') == \
        'the generic path on the chunked backend'


def test_scan_paths_tool_prints_the_choice(capsys):
    import importlib.util
    import json
    import os.path as osp
    from conftest import ROOT
    spec = importlib.util.spec_from_file_location(
        'scan_paths', osp.join(ROOT, 'tools', 'analysis_tools',
                               'scan_paths.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.main(['--device', 'cpu', '--json'])
    paths = json.loads(capsys.readouterr().out)
    from mmsparx.ops import available_backends
    assert paths['backends'] == list(available_backends('cpu'))
    assert paths['selective_scan'] == paths['backends'][0]
    assert paths['kernel_check'] == 'on'
    assert paths['mamba_ssm'] in ('not installed', ) or \
        paths['mamba_ssm'][0].isdigit()
