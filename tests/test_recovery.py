"""Recovery that works (issue 24, defects 2 and 3), on a Mask R-CNN shrunk
to a few hundred thousand weights (one CPU thread, a second per epoch):

* a step that blows the weights up is refused before it is saved, and the
  stop names a checkpoint that loads and gives finite losses; resuming it
  with ``--optim-from-config`` and a lower learning rate trains on with
  finite losses at the config's learning rate;
* ``max_keep_ckpts=1`` never deletes the newest verified checkpoint, so a
  step that poisoned the weights unnoticed still leaves a good one;
* per-iteration checkpoints in an epoch-based loop resume mid-epoch bit
  for bit (killed after iteration 4 or 6 of 8), and an epoch loop that
  cannot is refused at the start.
"""
import glob
import json
import math
import os.path as osp
from types import SimpleNamespace

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.runner import EpochBasedTrainLoop

from conftest import (DEMO_DET, as_cli, coco_options, load_test_config,
                      small_mask_rcnn)
from mmsparx.apis import build_runner, prepare_device
from mmsparx.engine.hooks import SafeCheckpointHook
from mmsparx.engine.hooks.finite import NonFiniteError
from tools.train import main, resume_point

# Channels / 4 everywhere: the same detector, 1/16 of the weights.
TINY = {'model.backbone.base_channels': 16,
        **small_mask_rcnn([16, 32, 64, 128])}
ITERS_PER_EPOCH = 4  # 8 images, batch 2


@pytest.fixture(scope='module')
def coco8(tmp_path_factory):
    from mmsparx.datasets import generate_coco
    root = str(tmp_path_factory.mktemp('coco8'))
    generate_coco(root, num_train=8, num_val=2, size=(64, 64), seed=1)
    return root


def options(root: str, **extra) -> dict:
    """The tiny detector on ``root``, no validation, a checkpoint after
    every iteration, one kept, seeded and deterministic; the dataset not
    serialised (that runs gc.collect() on every build, a second in a test
    process, and only saves memory with several workers)."""
    return dict(coco_options(root), **TINY, **{
        'train_dataloader.dataset.pipeline.2.scale': (64, 64),
        'train_dataloader.dataset.serialize_data': False,
        'val_cfg': None, 'val_dataloader': None, 'val_evaluator': None,
        'test_cfg': None, 'test_dataloader': None, 'test_evaluator': None,
        'default_hooks.checkpoint.by_epoch': False,
        'default_hooks.checkpoint.interval': 1,
        'default_hooks.checkpoint.max_keep_ckpts': 1,
        'randomness.seed': 0, 'randomness.deterministic': True}, **extra)


class Record(Hook):
    """Every loss term of every iteration, as exact floats."""

    def __init__(self):
        self.losses = {}

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        self.losses[runner.iter] = {k: v.item() for k, v in outputs.items()}


class KillAt(Hook):
    """A kill (Ctrl-C) just before iteration ``at`` (0-based)."""

    def __init__(self, at: int):
        self.at = at

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter == self.at:
            raise KeyboardInterrupt(f'killed before iteration {self.at}')


class PoisonAfterCheck(Hook):
    """Makes the weights NaN after FiniteCheckHook looked at step ``at``
    (0-based) and before it is saved: a step whose damage the check could
    not see."""

    priority = 'BELOW_NORMAL'  # between FiniteCheckHook and the checkpoint

    def __init__(self, at: int):
        self.at = at

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if runner.iter == self.at:
            runner.model.roi_head.bbox_head.fc_cls.weight.data.fill_(
                float('nan'))


def train(root, work_dir, hooks=(), resume=False, **extra):
    """Train in this process; the recorded losses and final weights."""
    cfg = load_test_config(DEMO_DET, options(root, **extra), work_dir)
    if resume:
        cfg.resume, cfg.load_from = True, resume_point(str(work_dir))
    runner = build_runner(cfg, DEMO_DET, prepare_device(cfg))
    record = Record()
    for hook in (record, *hooks):
        runner.register_hook(hook)
    runner.train()
    return record.losses, runner.model.state_dict()


def checkpoints(work_dir) -> list:
    return sorted(osp.basename(p) for p in glob.glob(f'{work_dir}/*.pth'))


def finite_forward(path: str, root: str, work_dir) -> bool:
    """Whether ``path``'s weights load and give finite losses."""
    cfg = load_test_config(DEMO_DET, options(root), work_dir)
    runner = build_runner(cfg, DEMO_DET, prepare_device(cfg))
    model = runner.model
    state = torch.load(path, map_location='cpu', weights_only=False)
    model.load_state_dict(state['state_dict'])
    batch = next(iter(runner.build_dataloader(cfg.train_dataloader)))
    model.train()
    with torch.no_grad():
        losses = model(**model.data_preprocessor(batch, True), mode='loss')
        _, log_vars = model.parse_losses(losses)
    return all(math.isfinite(float(v)) for v in log_vars.values())


# -- defect 2: a step that breaks the weights --------------------------------

def logged(work_dir) -> list:
    """(iteration, lr, loss) of each training iteration the latest run in
    ``work_dir`` logged."""
    latest = max(glob.glob(f'{work_dir}/*/vis_data/scalars.json'))
    with open(latest) as f:
        rows = [json.loads(line) for line in f]
    return sorted((r['iter'], r['lr'], r['loss']) for r in rows if 'loss' in r)


def test_exploding_step_is_refused_and_resume_takes_the_new_lr(
        coco8, tmp_path):
    # lr 1e6 behind a warm-up from 1e-10: step 1 is fine, step 2 writes
    # weights of ~1e4 while its losses are still finite.
    bad = {'optim_wrapper.optimizer.lr': 1e6,
           'param_scheduler.0.start_factor': 1e-10}
    with pytest.raises(NonFiniteError) as info:
        train(coco8, tmp_path, **bad)
    message = str(info.value)
    first = message.splitlines()[0]
    assert first.startswith('exploding weights at iteration 2 (epoch 1): '
                            'max |w| = '), first
    good = str(tmp_path / 'iter_1.pth')
    assert ('The last good checkpoint (it loads, and its forward on this '
            f'batch gives finite losses): {good}') in message
    assert f'--resume {good} --optim-from-config' in message
    assert checkpoints(tmp_path) == ['iter_1.pth']  # step 2 never saved
    assert finite_forward(good, coco8, tmp_path / 'probe')

    # The fix the message prints, through the tool, with a sane lr (1e4,
    # 100x lower, still moves weights by ~1e3 a step and is refused too;
    # 1e3 passes the check but its losses reach 1e22).
    lr = 1e-2
    main([DEMO_DET, '--work-dir', str(tmp_path), '--resume', good,
          '--optim-from-config', *as_cli(options(coco8, **dict(
              bad, **{'optim_wrapper.optimizer.lr': lr})))])
    rows = logged(tmp_path)
    assert [it for it, _, _ in rows] == [2, 3, 4]  # iteration 1 was kept
    for it, logged_lr, loss in rows:
        assert math.isfinite(loss) and loss < 10, (it, loss)  # ~3.2 at 1
        # The config's schedule at that iteration, not the checkpoint's lr
        # (mmengine's LinearLR with end=50 ramps over 49 steps).
        expected = lr * (1e-10 + (1 - 1e-10) * (it - 1) / 49)
        assert logged_lr == pytest.approx(expected, rel=1e-6), it
    assert checkpoints(tmp_path) == ['iter_4.pth']


def test_max_keep_ckpts_keeps_the_verified_checkpoint(coco8, tmp_path):
    # Step 2 poisons the weights behind the check's back; iteration 3's
    # losses are NaN. iter_2.pth is the newest file, iter_1.pth the only
    # good one, although max_keep_ckpts is 1.
    with pytest.raises(NonFiniteError) as info:
        train(coco8, tmp_path, [PoisonAfterCheck(1)])
    message = str(info.value)
    assert message.startswith('non-finite loss at iteration 3 (epoch 1)')
    assert checkpoints(tmp_path) == ['iter_1.pth', 'iter_2.pth']
    good, poisoned = str(tmp_path / 'iter_1.pth'), str(tmp_path / 'iter_2.pth')
    assert f'(it loads, and its forward on this batch gives finite ' \
        f'losses): {good} (newer ones fail: {poisoned}: its forward on ' \
        'this batch gives loss_cls = nan' in message
    assert finite_forward(good, coco8, tmp_path / 'probe')


def test_optim_from_config_needs_resume():
    from tools.train import use_config_optimizer
    with pytest.raises(ValueError, match='no --resume was given'):
        use_config_optimizer(SimpleNamespace(), None)


# -- defect 3: per-iteration checkpoints in an epoch-based loop --------------

@pytest.fixture(scope='module')
def uninterrupted(coco8, tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('straight')
    run = train(coco8, work_dir, **{'train_cfg.max_epochs': 2})
    # Only the last checkpoint is left at the end: the file kept for
    # recovery goes once the final one is verified.
    assert checkpoints(work_dir) == ['iter_8.pth']
    return run


@pytest.mark.parametrize('killed_after', [4, 6])
def test_mid_epoch_checkpoint_resumes_bit_exactly(coco8, tmp_path,
                                                  uninterrupted,
                                                  killed_after):
    with pytest.raises(KeyboardInterrupt):
        train(coco8, tmp_path, [KillAt(killed_after)],
              **{'train_cfg.max_epochs': 2})
    assert resume_point(str(tmp_path)).endswith(f'iter_{killed_after}.pth')
    losses, weights = train(coco8, tmp_path, resume=True,
                            **{'train_cfg.max_epochs': 2})
    ref_losses, ref_weights = uninterrupted
    # The 8 iterations of the schedule, no epoch trained twice.
    assert sorted(losses) == list(range(killed_after, 2 * ITERS_PER_EPOCH))
    for it, terms in losses.items():
        assert terms == ref_losses[it], f'iteration {it}'
    for key in ref_weights:
        assert torch.equal(weights[key], ref_weights[key]), key


class CustomEpochLoop(EpochBasedTrainLoop):
    """An epoch loop of someone else's: its run_epoch is unknown."""


def test_epoch_loop_that_cannot_resume_mid_epoch_is_refused():
    loop = CustomEpochLoop.__new__(CustomEpochLoop)
    hook = SafeCheckpointHook(by_epoch=False, interval=1)
    with pytest.raises(ValueError) as info:
        hook.before_run(SimpleNamespace(_train_loop=loop))
    message = str(info.value)
    assert 'CustomEpochLoop' in message
    assert 'default_hooks.checkpoint.by_epoch=True' in message
    assert 'IterBasedTrainLoop' in message
    # mmengine's own loop is swapped for the resumable one instead.
    runner = SimpleNamespace(
        _train_loop=EpochBasedTrainLoop.__new__(EpochBasedTrainLoop))
    hook.before_run(runner)
    assert type(runner._train_loop).__name__ == \
        'ResumableEpochBasedTrainLoop'
