"""Bad inputs get a clear message: a config that forgets custom_imports, a
NaN in an image or a loss, a taken dist port, and log lines in --json."""
import json
import logging
import os.path as osp
import socket
import sys
from types import SimpleNamespace

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.logging import MMLogger

import mmsparx.engine.hooks.finite  # noqa: F401  registers FiniteCheckHook
from conftest import (DEMO_DET, coco_options, load_test_config, run_tool)
from mmsparx.apis import build_runner, prepare_device
from mmsparx.utils.cli import IMPORT_LINE, load_config
from mmsparx.engine.hooks.finite import FiniteCheckHook, NonFiniteError

SPARX_MODEL = ("default_scope = 'mmpretrain'\n"
               "model = dict(type='ImageClassifier', backbone=dict("
               "type='SparXMamba', arch='t'), head=dict(type='LinearClsHead',"
               " num_classes=2, in_channels=512))\n")


class _Records(logging.Handler):
    """Collects the messages mmengine's current logger emits."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append((record.levelno, record.getMessage()))


def warnings_of(config_text: str, tmp_path) -> list:
    """WARNING messages that load_config logs for this config text."""
    path = tmp_path / 'cfg.py'
    path.write_text(config_text)
    logger = MMLogger.get_current_instance()
    handler = _Records()
    logger.addHandler(handler)
    try:
        load_config(str(path), None, 'none', str(tmp_path))
    finally:
        logger.removeHandler(handler)
    return [m for level, m in handler.messages if level == logging.WARNING]


def test_missing_custom_imports_warns_with_the_line(tmp_path):
    found = warnings_of(SPARX_MODEL, tmp_path)
    assert len(found) == 1, found
    assert "['SparXMamba']" in found[0]
    assert 'custom_imports does not import mmsparx' in found[0]
    assert IMPORT_LINE in found[0]
    assert IMPORT_LINE == ("custom_imports = dict(imports=['mmsparx'], "
                           "allow_failed_imports=False)")


def test_other_custom_imports_get_mmsparx_added(tmp_path):
    found = warnings_of(SPARX_MODEL + "custom_imports = dict(imports=["
                        "'mmpretrain.models'], allow_failed_imports=False)\n",
                        tmp_path)
    assert len(found) == 1, found
    assert ("custom_imports = dict(imports=['mmpretrain.models', "
            "'mmsparx'], allow_failed_imports=False)") in found[0]


def test_no_warning_with_mmsparx_imported_or_unused(tmp_path):
    assert not warnings_of(SPARX_MODEL + IMPORT_LINE + '\n', tmp_path)
    assert not warnings_of(SPARX_MODEL.replace('SparXMamba', 'ResNet'),
                           tmp_path)


# -- FiniteCheckHook on a real Mask R-CNN run --------------------------------

class SpoilAt(Hook):
    """Runs before FiniteCheckHook and breaks iteration ``at`` (1-based,
    as the log counts) with ``spoil(runner, data_batch)``."""

    priority = 'HIGHEST'

    def __init__(self, at: int, spoil):
        self.at, self.spoil = at, spoil

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter + 1 == self.at:
            self.spoil(runner, data_batch)


def nan_pixel(runner, data_batch):
    # mmdet's loader gives uint8 images; a float pipeline can give NaN.
    image = data_batch['inputs'][0].float()
    image[0, 3, 5] = float('nan')
    data_batch['inputs'][0] = image


def nan_classifier(runner, data_batch):
    runner.model.roi_head.bbox_head.fc_cls.weight.data.fill_(float('nan'))


def run_spoiled(coco_root, tmp_path, spoil) -> str:
    """Train the demo detector, saving after every iteration, with
    iteration 2 spoiled; return the error message."""
    options = dict(coco_options(coco_root), **{
        'default_hooks.checkpoint.by_epoch': False,
        'default_hooks.checkpoint.interval': 1})
    cfg = load_test_config(DEMO_DET, options, tmp_path)
    # Next to the config's own custom hooks, as a user would add it.
    cfg.custom_hooks = list(cfg.get('custom_hooks') or []) + [
        dict(type='FiniteCheckHook')]
    runner = build_runner(cfg, DEMO_DET, prepare_device(cfg))
    runner.register_hook(SpoilAt(2, spoil))
    assert any(isinstance(h, FiniteCheckHook) for h in runner.hooks)
    with pytest.raises(NonFiniteError) as info:
        runner.train()
    # Nothing of iteration 2 was saved; iteration 1's checkpoint is good.
    assert not osp.exists(tmp_path / 'iter_2.pth')
    with open(tmp_path / 'last_checkpoint') as f:
        last = f.read().strip()
    assert last.endswith('iter_1.pth')
    state = torch.load(last, weights_only=False)['state_dict']
    assert all(torch.isfinite(v).all() for v in state.values()
               if v.is_floating_point())
    message = str(info.value)
    assert 'iteration 2' in message and last in message
    return message


def test_nan_input_image_stops_before_the_step(coco_root, tmp_path):
    message = run_spoiled(coco_root, tmp_path, nan_pixel)
    first = message.splitlines()[0]
    assert first.startswith('non-finite input image at iteration 2 '
                            '(epoch 1)')
    assert 'inputs[0]' in first and '1 NaN value.' in first
    assert '.jpg' in first or '.png' in first  # the image file is named
    assert 'Fix the data' in message


def test_nan_loss_stops_before_the_checkpoint(coco_root, tmp_path):
    message = run_spoiled(coco_root, tmp_path, nan_classifier)
    first = message.splitlines()[0]
    assert first.startswith('non-finite loss at iteration 2')
    assert 'loss_cls = nan' in first
    assert 'loss_rpn_cls' not in first  # only the broken terms are named
    assert 'clip gradients' in message and '--resume' in message


def fake_runner(tmp_path, it=6):
    """What the hook reads of a runner (no loop: no epoch is named)."""
    return SimpleNamespace(iter=it, epoch=0, work_dir=str(tmp_path))


def test_stacked_batch_and_inf_loss_without_checkpoint(tmp_path):
    hook = FiniteCheckHook()
    images = torch.zeros(3, 3, 8, 8)
    images[2, 0, 0, 0] = float('inf')
    samples = [SimpleNamespace(metainfo=dict(img_path=f'img{i}.png'))
               for i in range(3)]
    with pytest.raises(NonFiniteError) as info:
        hook.before_train_iter(fake_runner(tmp_path), 0,
                               dict(inputs=images, data_samples=samples))
    first = str(info.value).splitlines()[0]
    assert first == ('non-finite input image at iteration 7: '
                     'inputs[2] (img2.png): 1 inf value.')
    assert 'No checkpoint was saved yet' in str(info.value)

    outputs = dict(loss=torch.tensor(float('inf')), loss_x=float('inf'),
                   loss_y=torch.tensor(1.0), acc=torch.tensor(float('nan')),
                   loss_extra=['not a number'])
    with pytest.raises(NonFiniteError, match=r'loss_x = inf; loss = inf\.'):
        hook.after_train_iter(fake_runner(tmp_path), 0, None, outputs)
    # Finite values, uint8 images and non-loss entries pass.
    hook.before_train_iter(fake_runner(tmp_path), 0,
                           dict(inputs=[torch.zeros(3, 4, 4,
                                                    dtype=torch.uint8)]))
    hook.after_train_iter(fake_runner(tmp_path), 0, None,
                          dict(loss=torch.tensor(2.0), acc=float('nan')))


# -- dist scripts: a taken port ----------------------------------------------

@pytest.mark.parametrize('script,args', [
    ('tools/dist_train.sh', [DEMO_DET, '2']),
    ('tools/dist_test.sh', [DEMO_DET, 'model.pth', '2'])])
def test_dist_script_names_a_taken_port(script, args):
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_tool(['bash', script, *args], timeout=60,
                          env={'PORT': str(port)})
    assert result.returncode == 1
    assert f'port {port} is in use' in result.stderr
    assert 'PORT=' in result.stderr and script in result.stderr
    assert 'Traceback' not in result.stderr  # stopped before torch ran


# -- --json tools: stdout is the JSON alone ----------------------------------

@pytest.mark.parametrize('args', [
    # sparx-mamba logs its scan backend (the line that used to precede it).
    ['tools/analysis_tools/benchmark.py', 'model', 'sparx-mamba-t', '--batch',
     '1', '--input', '32', '32', '--warmup', '0', '--runs', '1', '--json'],
    ['tools/analysis_tools/model_table.py', 'spartan-xt', '--input', '64', '64',
     '--json'],
    ['tools/analysis_tools/benchmark.py', 'scan', '--batch', '1', '--width',
     '8', '--length', '16', '--repeat', '1', '--json'],
])
def test_json_tools_print_only_json(args):
    result = run_tool([sys.executable, *args], timeout=300,
                      env={'OMP_NUM_THREADS': '1'})
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(result.stdout)
    assert rows and isinstance(rows, list)
    if args[1] == 'model':
        assert 'mmsparx selective scan on cpu' in result.stderr
