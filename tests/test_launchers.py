"""The launchers as a new user meets them (issue 24, defects 1, 4 and 7):
they name the interpreter they run and why, refuse wrong arguments in one
line before torchrun starts, take their workers down when killed; ``--amp``
trains on a CPU-only machine; ``--show-dir`` writes where its help says for
mmseg too."""
import glob
import os
import os.path as osp
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import DEMO_DET, DEMO_SEG, ROOT, as_cli, coco_options, free_port

TRAIN = ['bash', 'tools/dist_train.sh']
TEST = ['bash', 'tools/dist_test.sh']
VENV_PYTHON = osp.join(ROOT, '.venv', 'bin', 'python')


def launch(args, env=None, cwd=ROOT,
           timeout=120) -> subprocess.CompletedProcess:
    """Run a launcher; PYTHON is unset unless ``env`` sets it."""
    full = {k: v for k, v in os.environ.items() if k not in ('PYTHON', 'GPUS')}
    full.update(OMP_NUM_THREADS='1', PORT=str(free_port()), **(env or {}))
    return subprocess.run(args, cwd=cwd, env=full, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.skipif(not os.access(VENV_PYTHON, os.X_OK),
                    reason='no .venv in the repo (make setup builds it)')
def test_first_line_names_the_venv_when_python_is_unset():
    env = {k: v for k, v in os.environ.items() if k != 'PYTHON'}
    proc = subprocess.Popen(
        [*TRAIN, DEMO_DET, '1'], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True, start_new_session=True,
        env=dict(env, OMP_NUM_THREADS='1', PORT=str(free_port())))
    try:
        first = proc.stdout.readline().rstrip('\n')
    finally:  # only the first line matters: stop what follows
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert first == (f'dist_train.sh: python {VENV_PYTHON} (the repo\'s '
                     '.venv from make setup; set PYTHON to use another)')


def test_set_python_is_named_and_one_without_torch_refused(tmp_path):
    fake = tmp_path / 'python'
    fake.write_text('#!/bin/sh\necho "No module named torch" >&2\nexit 1\n')
    fake.chmod(0o755)
    result = launch([*TRAIN, DEMO_DET, '1'], env={'PYTHON': str(fake)})
    assert result.stdout.splitlines()[0] == \
        f'dist_train.sh: python {fake} (PYTHON is set)'
    assert result.returncode == 1
    result = launch([*TRAIN, DEMO_DET, '1'],
                    env={'PYTHON': str(tmp_path / 'nothing')})
    assert result.returncode == 1
    assert 'is not a command: run make setup' in result.stderr


@pytest.mark.parametrize('script', ['dist_train.sh', 'dist_test.sh',
                                    'slurm_train.sh', 'slurm_test.sh'])
def test_help_and_no_arguments_give_usage(script):
    usage = f'usage: {"[GPUS=8] " if "slurm" in script else ""}tools/{script}'
    helped = launch(['bash', f'tools/{script}', '--help'])
    assert helped.returncode == 0 and helped.stdout.startswith(usage)
    assert launch(['bash', f'tools/{script}', '-h']).returncode == 0
    bare = launch(['bash', f'tools/{script}'])
    assert bare.returncode == 2 and bare.stderr.startswith(usage)


@pytest.mark.parametrize('gpus, says', [
    ('0', "GPUS must be a positive integer (the number of processes), got "
          "'0': give 1 or more."),
    ('abc', "GPUS must be a positive integer (the number of processes), got "
            "'abc'."),
    ('-2', "GPUS must be a positive integer (the number of processes), got "
           "'-2'."),
    ('--work-dir', "GPUS is the 2nd positional argument (tools/dist_train.sh "
                   "CONFIG GPUS [train.py args]), got the option '--work-dir' "
                   "in its place (options go after it)."),
])
def test_bad_gpus_is_one_line_and_exit_2(gpus, says):
    result = launch([*TRAIN, DEMO_DET, gpus, 'w'])
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == f'dist_train.sh: {says}'
    assert 'Traceback' not in result.stderr and result.stdout == ''


def test_gpus_from_the_environment_gets_the_positional_command():
    result = launch([*TRAIN, DEMO_DET, '--work-dir', 'X'], env={'GPUS': '2'})
    assert result.returncode == 2
    assert ("The GPUS environment variable (2) is read by slurm_*.sh only; "
            f"here run: tools/dist_train.sh {DEMO_DET} 2 --work-dir X"
            ) in result.stderr


def test_dist_test_checks_its_three_positionals():
    result = launch([*TEST, DEMO_DET, 'x.pth', '0'])
    assert result.returncode == 2
    assert "GPUS must be a positive integer" in result.stderr
    result = launch([*TEST, DEMO_DET, '2'])
    assert result.returncode == 2 and 'GPUS is missing: it is the 3rd ' \
        'positional argument' in result.stderr


def test_missing_config_is_named():
    result = launch([*TRAIN, 'configs/nope.py', '2'])
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == (
        f"dist_train.sh: CONFIG 'configs/nope.py' does not exist (paths are "
        f"relative to {ROOT}).")


def test_slurm_gpus_env_is_checked():
    result = launch(['bash', 'tools/slurm_train.sh', 'p', 'job', DEMO_DET,
                     'work'], env={'GPUS': 'x'})
    assert result.returncode == 2
    assert "slurm_train.sh: GPUS must be a positive integer" in result.stderr


@pytest.mark.parametrize('restart', [0, 1])
def test_slurm_requeues_a_preempted_run(tmp_path, restart):
    """srun's exit 75 (PreemptionHook saved and stopped) in an sbatch job:
    the script requeues the job; the requeued run (SLURM_RESTART_COUNT)
    gets --resume. Fake srun / scontrol record what they were given."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    for name, status in (('srun', 75), ('scontrol', 0)):
        tool = bin_dir / name
        tool.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/{name}.log\n'
                        f'exit {status}\n')
        tool.chmod(0o755)
    result = launch(['bash', 'tools/slurm_train.sh', 'p', 'job', DEMO_DET,
                     str(tmp_path / 'work'), '--amp'], env=dict(
        PATH=f'{bin_dir}:{os.environ["PATH"]}', SLURM_JOB_ID='4242',
        SLURM_RESTART_COUNT=str(restart), MMSPARX_PREFLIGHT='0',
        PYTHON=sys.executable))
    assert result.returncode == 75, result.stderr[-2000:]
    assert (tmp_path / 'scontrol.log').read_text() == 'requeue 4242\n'
    assert 'preempted; checkpoint saved' in result.stderr
    srun_args = (tmp_path / 'srun.log').read_text().split()
    assert srun_args[-1] == ('--resume' if restart else '--amp')


def alive_with(text: str) -> list:
    """Pids of processes whose command line contains ``text``."""
    pids = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open(f'/proc/{entry}/cmdline', 'rb') as f:
                cmdline = f.read().replace(b'\0', b' ').decode(
                    errors='replace')
            with open(f'/proc/{entry}/stat') as f:
                state = f.read().rsplit(')', 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != 'Z':
            pids.append(int(entry))
    return pids


def checkpoints(work_dir) -> set:
    return set(glob.glob(osp.join(str(work_dir), '*.pth')))


@pytest.mark.skipif(not sys.platform.startswith('linux'),
                    reason='/proc and PR_SET_PDEATHSIG are Linux')
def test_killed_torchrun_leaves_no_worker(coco_root, tmp_path):
    work = tmp_path / 'work'
    options = dict(coco_options(coco_root), **{
        'train_cfg.max_epochs': 500, 'train_cfg.val_interval': 1000,
        'default_hooks.checkpoint.max_keep_ckpts': 1000,
        'default_hooks.logger.interval': 50,
        'train_dataloader.dataset.pipeline.2.scale': (64, 64)})
    full = {k: v for k, v in os.environ.items() if k != 'PYTHON'}
    # The launcher's data check is left out (MMSPARX_PREFLIGHT=0: it has
    # its own tests, and test_training.py's dist_train.sh run keeps it):
    # what matters here is torchrun and its workers.
    full.update(OMP_NUM_THREADS='1', PORT=str(free_port()),
                PYTHON=sys.executable, MMSPARX_PREFLIGHT='0')
    proc = subprocess.Popen(
        [*TRAIN, DEMO_DET, '2', '--work-dir', str(work), *as_cli(options)],
        cwd=ROOT, env=full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 240
        while not checkpoints(work) and time.time() < deadline:
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            time.sleep(0.5)
        assert checkpoints(work), 'training wrote no checkpoint in 240 s'
        torchrun = [pid for pid in alive_with(str(work))
                    if pid in alive_with('torch.distributed.run')]
        assert len(torchrun) == 1, torchrun
        os.kill(torchrun[0], signal.SIGKILL)
        deadline = time.time() + 10
        while alive_with(str(work)) and time.time() < deadline:
            time.sleep(0.2)
        assert alive_with(str(work)) == [], 'workers outlived torchrun'
        written = checkpoints(work)
        time.sleep(3)
        assert checkpoints(work) == written
    finally:
        for pid in alive_with(str(work)):
            os.kill(pid, signal.SIGKILL)
        proc.kill()
        proc.wait()


def test_amp_trains_on_cpu_with_bfloat16(coco_root, tmp_path):
    from mmengine.config import Config

    from mmsparx.engine.optimizers.cpu_amp import (CpuBf16OptimWrapper,
                                                   enable_amp)
    cfg = Config(dict(optim_wrapper=dict(
        type='OptimWrapper', optimizer=dict(type='SGD', lr=0.1))))
    changes = enable_amp(cfg, cuda=False)
    assert cfg.optim_wrapper.type == 'CpuBf16OptimWrapper'
    assert 'bfloat16 autocast on the CPU' in changes[0]
    model = torch.nn.Linear(4, 4)
    wrapper = CpuBf16OptimWrapper(torch.optim.SGD(model.parameters(), 0.1))
    with wrapper.optim_context(model):
        assert model(torch.randn(2, 4)).dtype == torch.bfloat16
    # The whole Mask R-CNN (mmcv's NMS and RoIAlign included) through the
    # tool: mmengine's AmpOptimWrapper would assert a GPU here.
    options = dict(coco_options(coco_root), **{
        'train_cfg.val_interval': 5,
        'train_dataloader.dataset.pipeline.2.scale': (64, 64)})
    full = {k: v for k, v in os.environ.items() if k != 'PYTHON'}
    result = subprocess.run(
        [sys.executable, 'tools/train.py', DEMO_DET, '--amp', '--work-dir',
         str(tmp_path), *as_cli(options)], cwd=ROOT, capture_output=True,
        text=True, timeout=300, env=dict(full, OMP_NUM_THREADS='1'))
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert ('no CUDA: --amp: optim_wrapper.type: OptimWrapper -> '
            'CpuBf16OptimWrapper, bfloat16 autocast on the CPU') in log
    losses = [line for line in log.splitlines()
              if 'Epoch(train) [1][2/2]' in line]
    assert losses and 'loss: nan' not in losses[0]


def seg_options(root: str) -> list:
    return as_cli({
        'train_dataloader.dataset.data_root': root,
        'val_dataloader.dataset.data_root': root,
        'test_dataloader.dataset.data_root': root,
    })


def save_untrained(config: str, path: str, tmp_path) -> None:
    """A checkpoint of ``config``'s freshly built model (no training run:
    what is drawn does not matter here, where it lands does)."""
    from mmengine.registry import MODELS, init_default_scope

    from conftest import load_test_config
    from mmsparx.apis import prepare_device
    cfg = load_test_config(config, None, tmp_path / 'build')
    prepare_device(cfg)  # SyncBN -> BN, as the tool does on this machine
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)


def test_show_dir_for_mmseg_lands_in_the_timestamp_folder(ade_root,
                                                          tmp_path):
    work, cwd = tmp_path / 'work', tmp_path / 'cwd'
    cwd.mkdir()
    env = dict({k: v for k, v in os.environ.items() if k != 'PYTHON'},
               OMP_NUM_THREADS='1')
    work.mkdir()
    checkpoint = str(work / 'untrained.pth')
    save_untrained(DEMO_SEG, checkpoint, tmp_path)
    before = set(os.listdir(work))
    tested = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'test.py'), DEMO_SEG,
         checkpoint, '--work-dir', str(work), '--show-dir',
         'vis', *seg_options(ade_root)], cwd=str(cwd), env=env,
        capture_output=True, text=True, timeout=300)
    assert tested.returncode == 0, tested.stderr[-3000:]
    assert os.listdir(cwd) == [], 'test.py wrote into the current directory'
    (stamp, ) = [name for name in set(os.listdir(work)) - before
                 if osp.isdir(work / name)]
    drawn = glob.glob(str(work / stamp / 'vis' / '*.png'))
    assert len(drawn) == 2, os.listdir(work / stamp)
