"""dist_train.sh / dist_test.sh on CPU give each process its share of the
cores when OMP_NUM_THREADS is unset (one all-core OpenMP pool per process
oversubscribes the machine), and leave a set value and CUDA machines be.

The scripts run for real with PYTHON pointing at a stub: it runs the helper
scripts with this interpreter and, instead of ``-m torch.distributed.run``,
prints the thread variables torchrun would inherit."""
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import DEMO_DET, ROOT, free_port

sys.path.insert(0, os.path.join(ROOT, 'tools', 'misc'))
import threads_per_process as tpp  # noqa: E402

STUB = textwrap.dedent('''\
    #!{python}
    import os, runpy, sys
    if sys.argv[1:3] == ['-m', 'torch.distributed.run']:
        for key in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS'):
            print(f'{{key}}={{os.environ.get(key, "<unset>")}}')
        sys.exit(0)
    fake = os.environ.get('FAKE_CUDA')
    # Only the thread helper asks torch about CUDA; the other helpers run
    # without importing it (3 s each here).
    if fake and sys.argv[1].endswith('threads_per_process.py'):
        import torch
        torch.cuda.is_available = lambda: fake == '1'
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name='__main__')
''')


@pytest.mark.parametrize('processes, cores, threads', [
    (1, 2, 2), (2, 2, 1), (3, 2, 1), (2, 16, 8), (3, 16, 5), (0, 4, 4)])
def test_threads_per_process(processes, cores, threads):
    assert tpp.threads_per_process(processes, cores) == threads


def test_share_only_without_cuda_and_for_counts():
    assert tpp.share('2', cuda=False, cores=8) == 4
    assert tpp.share('2', cuda=True, cores=8) is None
    # torchrun's own words for nproc_per_node are left to torchrun.
    assert tpp.share('auto', cuda=False, cores=8) is None
    assert tpp.share('0', cuda=False, cores=8) is None


@pytest.fixture
def stub(tmp_path) -> str:
    path = tmp_path / 'python'
    path.write_text(STUB.format(python=sys.executable))
    path.chmod(0o755)
    return str(path)


def launch(stub: str, script: str, gpus: str,
           **env: str) -> subprocess.CompletedProcess:
    """Run ``script`` with ``gpus`` processes, the stub as PYTHON, and
    OMP/MKL_NUM_THREADS unset unless ``env`` sets them; FAKE_CUDA '0'/'1'
    makes torch.cuda.is_available() False/True in the helper."""
    full = {k: v for k, v in os.environ.items()
            if k not in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS')}
    full.update(PYTHON=stub, PORT=str(free_port()), MMSPARX_PREFLIGHT='0',
                **env)
    args = [DEMO_DET, gpus] if script == 'dist_train.sh' else \
        [DEMO_DET, 'no.pth', gpus]
    return subprocess.run(['bash', os.path.join('tools', script), *args],
                          cwd=ROOT, env=full, capture_output=True, text=True,
                          timeout=120)


def exported(result: subprocess.CompletedProcess) -> dict:
    """The thread variables the stub torchrun saw."""
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(line.split('=', 1) for line in result.stdout.splitlines()
                if line.startswith(('OMP_NUM_THREADS=', 'MKL_NUM_THREADS=')))


@pytest.mark.parametrize('script', ['dist_train.sh', 'dist_test.sh'])
def test_unset_threads_get_the_share_on_cpu(stub, script):
    result = launch(stub, script, '2', FAKE_CUDA='0')
    share = str(max(1, tpp.available_cores() // 2))
    assert exported(result) == {'OMP_NUM_THREADS': share,
                                'MKL_NUM_THREADS': share}
    said = [line for line in result.stdout.splitlines()
            if line.startswith('no CUDA:')]
    assert said == [f'no CUDA: OMP_NUM_THREADS={share} for each of 2 CPU '
                    f'processes (set OMP_NUM_THREADS to override)']


def test_set_threads_are_left(stub):
    result = launch(stub, 'dist_train.sh', '2', OMP_NUM_THREADS='3',
                    FAKE_CUDA='0')
    assert exported(result) == {'OMP_NUM_THREADS': '3',
                                'MKL_NUM_THREADS': '<unset>'}
    assert 'no CUDA:' not in result.stdout


def test_cuda_machines_keep_torchruns_default(stub):
    result = launch(stub, 'dist_train.sh', '2', FAKE_CUDA='1')
    assert exported(result) == {'OMP_NUM_THREADS': '<unset>',
                                'MKL_NUM_THREADS': '<unset>'}
    assert 'no CUDA:' not in result.stdout
