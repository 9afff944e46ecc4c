"""mmsparx's configs train unchanged with the toolboxes' own tools:
mmdet's and mmseg's ``tools/train.py`` (the copies they install in
``<package>/.mim/tools``) and ``mim train mmdet CONFIG``. Nothing of
mmsparx's tools is involved: the config's ``custom_imports`` is what brings
in the backbone and the hooks. Each run is a subprocess started outside the
checkout, small by ``--cfg-options`` only, on the generated data sets.
mmdet's train.py runs once, started by ``mim train mmdet``: mim runs that
script with this Python (its ``Training command is`` line shows it), and
both mmdet tests check that one run.

Also: setup.py puts configs/, tools/ and model-index.yml into
``mmsparx/.mim`` (links for an editable install, copies in a wheel), which
``mim`` looks for in an installed package.
"""
import glob
import importlib.util
import json
import os
import os.path as osp
import re
import resource
import shutil
import subprocess
import sys
import time
import zipfile
from typing import Iterator, Tuple

import pytest
import torch

from conftest import ROOT, coco_paper_options

DET_CONFIG = osp.join(ROOT, 'configs', 'sparx',
                      'mask-rcnn_sparx-mamba-t_fpn_1x_coco.py')
SEG_CONFIG = osp.join(ROOT, 'configs', 'sparx',
                      'upernet_sparx-mamba-t_8xb2-160k_ade20k-512x512.py')
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
MMSPARX_HOOKS = ('SafeCheckpointHook', 'RandomStateHook', 'FiniteCheckHook')


def toolbox_train_script(package: str) -> str:
    """The train.py that ``package`` installs for mim (without importing
    the package here)."""
    spec = importlib.util.find_spec(package)
    assert spec is not None, f'{package} is not installed (make setup)'
    script = osp.join(spec.submodule_search_locations[0], '.mim', 'tools',
                      'train.py')
    assert osp.isfile(script), script
    return script


def cfg_words(options: dict) -> list:
    """``--cfg-options`` words as mmengine's DictAction reads them: tuples
    as ``(a,b)``; no dict values (DictAction cannot parse them)."""
    words = []
    for key, value in options.items():
        assert not isinstance(value, dict), key
        if isinstance(value, (tuple, list)):
            value = '(' + ','.join(map(str, value)) + ')'
        words.append(f'{key}={value}')
    return ['--cfg-options', *words]


def det_options(coco_root: str) -> dict:
    """The Mask R-CNN config on the generated COCO set at 64x51: one
    training image (one iteration), then CocoMetric on one validation
    image."""
    options = coco_paper_options(coco_root)
    for key in [key for key in options if key.endswith('.metainfo')]:
        options[key + '.classes'] = options.pop(key)['classes']
    for loader in LOADERS:
        options[f'{loader}.num_workers'] = 0
        options[f'{loader}.persistent_workers'] = False
        options[f'{loader}.dataset.indices'] = 1
    options['train_dataloader.batch_size'] = 1
    options['train_dataloader.dataset.pipeline.2.scale'] = (64, 64)
    options['val_dataloader.dataset.pipeline.1.scale'] = (64, 64)
    options['test_dataloader.dataset.pipeline.1.scale'] = (64, 64)
    # Fewer boxes through the mask head at validation: 3 shape classes on
    # a 64x51 image need no 100 detections.
    options['model.test_cfg.rpn.max_per_img'] = 100
    options['model.test_cfg.rcnn.max_per_img'] = 20
    options['model.train_cfg.rpn_proposal.max_per_img'] = 200
    options['model.train_cfg.rcnn.sampler.num'] = 128
    return options


def seg_options(ade_root: str) -> dict:
    """The UperNet config on the generated ADE20K set: one iteration (the
    config's batch of 2) at 32x32, validated (IoUMetric) on one image and
    saved."""
    options = {
        'model.backbone.init_cfg': None,
        'model.data_preprocessor.size': (32, 32),
        'train_cfg.max_iters': 1,
        'train_cfg.val_interval': 1,
        'default_hooks.checkpoint.interval': 1,
        'default_hooks.logger.interval': 1,
        'train_dataloader.dataset.pipeline.2.scale': (128, 32),
        'train_dataloader.dataset.pipeline.3.crop_size': (32, 32),
        'val_dataloader.dataset.pipeline.1.scale': (128, 32),
        'test_dataloader.dataset.pipeline.1.scale': (128, 32),
        'train_dataloader.dataset.indices': 2,
        'val_dataloader.dataset.indices': 1,
        'test_dataloader.dataset.indices': 1,
    }
    for loader in LOADERS:
        options[f'{loader}.dataset.data_root'] = ade_root
        options[f'{loader}.num_workers'] = 0
        options[f'{loader}.persistent_workers'] = False
    return options


def run(args: list, cwd) -> str:
    """Run ``args`` from ``cwd`` (not the checkout) on one thread; return
    stdout + stderr, failing with their tail."""
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    start = time.monotonic()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(args, cwd=str(cwd), env=env, capture_output=True,
                            text=True, timeout=600)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    output = result.stdout + result.stderr
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime +
                                               before.ru_stime)
    print(f'\n{" ".join(map(osp.basename, args[:3]))}: '
          f'{time.monotonic() - start:.1f} s ({cpu:.1f} s CPU)')
    assert result.returncode == 0, output[-6000:]
    return output


def check_work_dir(work_dir: str, config: str, checkpoint: str, best: str,
                   last_train: str, metric: str) -> None:
    """The run kept the config's ``sync_bn`` (harmless without a launcher:
    the runner does not wrap the model), saved ``checkpoint`` (named by
    last_checkpoint, with the random states of mmsparx's RandomStateHook)
    and the ``best`` one, and its log shows the last training iteration,
    mmsparx's hooks and the validation ``metric``."""
    with open(osp.join(work_dir, osp.basename(config))) as f:
        assert "sync_bn = 'torch'" in f.read()
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        assert osp.basename(f.read().strip()) == checkpoint
    path = osp.join(work_dir, checkpoint)
    ckpt = torch.load(path, map_location='cpu', mmap=True, weights_only=False)
    assert 'rng_states' in ckpt and 'optimizer' in ckpt
    assert any(key.startswith('backbone.') for key in ckpt['state_dict'])
    del ckpt
    assert osp.isfile(osp.join(work_dir, best))
    logs = glob.glob(osp.join(work_dir, '*', '*.log'))
    assert len(logs) == 1, logs
    log = open(logs[0]).read()
    assert last_train in log
    for hook in MMSPARX_HOOKS:
        assert hook in log, hook
    scalars = glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    with open(scalars[0]) as f:
        records = [json.loads(line) for line in f if line.strip()]
    values = [record[metric] for record in records if metric in record]
    assert len(values) == 1 and 0 <= values[0] <= 100, values


def remove_checkpoints(work_dir: str) -> None:
    """The runs' checkpoints are hundreds of MB."""
    for pth in glob.glob(osp.join(work_dir, '*.pth')):
        os.remove(pth)


@pytest.fixture(scope='module')
def mim_mmdet_run(coco_root, tmp_path_factory) -> Iterator[Tuple[str, str]]:
    """``mim train mmdet DET_CONFIG`` once, from outside the checkout: its
    output and work dir."""
    mim = osp.join(osp.dirname(sys.executable), 'mim')
    assert osp.isfile(mim), ('openmim is not installed: make setup '
                             '(requirements/toolboxes.txt)')
    cwd = tmp_path_factory.mktemp('mim_mmdet')
    work_dir = str(cwd / 'work')
    output = run([mim, 'train', 'mmdet', DET_CONFIG, '--work-dir', work_dir,
                  *cfg_words(det_options(coco_root))], cwd)
    yield output, work_dir
    remove_checkpoints(work_dir)


def training_command(output: str) -> Tuple[str, str, str]:
    """Python, script and config of the command mim ran."""
    command = re.search(r'Training command is (\S+) (\S+) (\S+)', output)
    assert command is not None, output[-3000:]
    return command.groups()


def check_mmdet_run(output: str, work_dir: str) -> None:
    """The run was mmdet's own train.py (the copy in mmdet/.mim/tools) on
    the config, with this environment's Python, and trained and validated
    into the work dir."""
    python, script, config = training_command(output)
    assert osp.realpath(python) == osp.realpath(sys.executable)
    assert script == toolbox_train_script('mmdet')
    assert config == DET_CONFIG
    check_work_dir(work_dir, DET_CONFIG, 'epoch_1.pth',
                   'best_coco_bbox_mAP_epoch_1.pth', 'Epoch(train) [1][1/1]',
                   'coco/segm_mAP')


def test_mmdet_train_py_runs_the_config(mim_mmdet_run):
    check_mmdet_run(*mim_mmdet_run)


def test_mmseg_train_py_runs_the_config(ade_root, tmp_path):
    work_dir = str(tmp_path / 'work')
    run([sys.executable, toolbox_train_script('mmseg'), SEG_CONFIG,
         '--work-dir', work_dir, *cfg_words(seg_options(ade_root))],
        tmp_path)
    check_work_dir(work_dir, SEG_CONFIG, 'iter_1.pth', 'best_mIoU_iter_1.pth',
                   'Iter(train) [1/1]', 'mIoU')
    remove_checkpoints(work_dir)


def test_mim_train_mmdet_runs_the_config(mim_mmdet_run):
    output, work_dir = mim_mmdet_run
    assert 'Training finished successfully' in output  # mim's own word
    check_mmdet_run(output, work_dir)


def source_copy(dest) -> str:
    """What a build of mmsparx reads, copied out of the checkout (the
    checkout's own mmsparx/.mim stays as it is)."""
    dest = str(dest)
    skip = shutil.ignore_patterns('__pycache__', '*.pyc', '*.so', '.mim',
                                  '*.egg-info')
    for name in ('mmsparx', 'configs', 'tools', 'requirements'):
        shutil.copytree(osp.join(ROOT, name), osp.join(dest, name),
                        ignore=skip)
    for name in ('setup.py', 'pyproject.toml', 'MANIFEST.in', 'README.md',
                 'model-index.yml'):
        if osp.exists(osp.join(ROOT, name)):
            shutil.copy(osp.join(ROOT, name), dest)
    return dest


def mim_files(src: str) -> set:
    """The files under configs/ and tools/ (and model-index.yml) that a
    wheel ships in mmsparx/.mim, relative to ``src``."""
    files = set()
    for folder, patterns in (('configs', ('*.py', '*.yml', '*.md')),
                             ('tools', ('*.py', '*.sh'))):
        for pattern in patterns:
            files.update(osp.relpath(path, src) for path in glob.glob(
                osp.join(src, folder, '**', pattern), recursive=True))
    if osp.exists(osp.join(src, 'model-index.yml')):
        files.add('model-index.yml')
    return files


def test_wheel_ships_configs_and_tools_for_mim(tmp_path):
    src = source_copy(tmp_path / 'src')
    env = dict(os.environ, MMSPARX_NO_EXT='1', OMP_NUM_THREADS='1')
    build = subprocess.run(
        [sys.executable, '-m', 'pip', 'wheel', '--no-deps',
         '--no-build-isolation', '-q', '-w', str(tmp_path / 'dist'), src],
        cwd=src, env=env, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    wheel, = glob.glob(str(tmp_path / 'dist' / 'mmsparx-*.whl'))
    with zipfile.ZipFile(wheel) as zf:
        shipped = {name[len('mmsparx/.mim/'):] for name in zf.namelist()
                   if name.startswith('mmsparx/.mim/')}
    expected = mim_files(src)
    assert 'configs/sparx/mask-rcnn_sparx-mamba-t_fpn_1x_coco.py' in expected
    assert 'tools/train.py' in expected
    assert shipped == expected
    # A wheel build copies: no links into the source tree in the wheel.
    assert not osp.islink(osp.join(src, 'mmsparx', '.mim', 'configs'))


def test_editable_build_links_configs_and_tools_for_mim(tmp_path):
    src = source_copy(tmp_path / 'src')
    mim_dir = osp.join(src, 'mmsparx', '.mim')
    os.makedirs(osp.join(mim_dir, 'configs'))  # a stale copy is replaced
    env = dict(os.environ, MMSPARX_NO_EXT='1', OMP_NUM_THREADS='1')
    code = ('import sys; from setuptools import build_meta; '
            'build_meta.build_editable(sys.argv[1])')
    build = subprocess.run([sys.executable, '-c', code, str(tmp_path / 'e')],
                           cwd=src, env=env, capture_output=True, text=True,
                           timeout=300)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    names = ['configs', 'tools']
    if osp.exists(osp.join(src, 'model-index.yml')):
        names.append('model-index.yml')
    for name in names:
        link = osp.join(mim_dir, name)
        assert osp.islink(link), name
        assert not osp.isabs(os.readlink(link))  # the checkout may move
        assert osp.realpath(link) == osp.realpath(osp.join(src, name))
    assert osp.isfile(osp.join(
        mim_dir, 'configs', 'sparx', 'mask-rcnn_sparx-mamba-t_fpn_1x_coco.py'))
