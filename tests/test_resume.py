"""Nothing lost on a kill: a Mask R-CNN + SparX-Mamba run (drop path,
random flips, a shuffling sampler, validation every epoch) killed after a
checkpoint, or while writing one, resumes to the same losses and weights as
the uninterrupted run, bit for bit; so does an iteration-based UperNet run
(random crops, flips, photometric noise, dropout, an infinite shuffling
sampler), whose loop replays the data it had seen; a run preempted
(SIGTERM, SIGUSR1) in the middle of an epoch saves after the iteration it
was in and resumes from the next; ``--resume`` with nothing to resume says
so.

Both models are shrunk (``SMALL_SPARX``, ``SMALL_UPERNET``): what is checked
is the loop, the hooks and the random states, not the model's size."""
import os
import os.path as osp
import signal

import pytest
import torch
from mmengine.hooks import Hook

from conftest import (DEMO_SEG, NOT_SERIALISED, ROOT, coco_options,
                      load_test_config, small_mask_rcnn)
from mmsparx.apis import build_runner, prepare_device
from mmsparx.engine.hooks import PreemptionHook, safe_checkpoint
from mmsparx.engine.hooks.preemption import PREEMPTED_EXIT_CODE
from tools.train import resume_point

CONFIG = osp.join(ROOT, 'configs', 'demo', 'maskrcnn_sparx_t_fpn_shapes.py')
EPOCHS = 3  # 2 iterations each (4 images, batch 2)
# The config's detector and SparX-Mamba (its drop path, GroupNorm outputs
# and T's stem, strides and ganglion layers), at depths 1-1-3-1 and 1/6 of
# T's widths, with 32-channel FPN and heads, fewer proposals and RoIs, on
# 80x64 images.
SMALL_SPARX = {
    'model.backbone.arch': dict(
        _delete_=True, depths=(1, 1, 3, 1), channels=(16, 32, 48, 64),
        stem='v1', strides=(1, 1, 2, 1), ganglion_start=(None, 1, 0, 0)),
    **small_mask_rcnn([16, 32, 48, 64]),
    'model.train_cfg.rpn_proposal.max_per_img': 50,
    'model.train_cfg.rcnn.sampler.num': 32,
    'model.test_cfg.rpn.max_per_img': 50,
    'model.test_cfg.rcnn.max_per_img': 10,
    'train_dataloader.dataset.pipeline.2.scale': (80, 64),
    'val_dataloader.dataset.pipeline.1.scale': (80, 64),
    'test_dataloader.dataset.pipeline.1.scale': (80, 64),
}
# UperNet R18's layers at a quarter of the widths, on 64x64 crops.
SMALL_UPERNET = {
    'model.backbone.stem_channels': 16, 'model.backbone.base_channels': 16,
    'model.decode_head.in_channels': [16, 32, 64, 128],
    'model.decode_head.channels': 32,
    'model.auxiliary_head.in_channels': 64,
    'model.auxiliary_head.channels': 16,
    'model.data_preprocessor.size': (64, 64),
    'train_dataloader.dataset.pipeline.2.scale': (256, 64),
    'train_dataloader.dataset.pipeline.3.crop_size': (64, 64),
    'val_dataloader.dataset.pipeline.1.scale': (256, 64),
}


class Record(Hook):
    """Every loss term of every iteration, as exact floats."""

    def __init__(self):
        self.losses = {}

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        self.losses[runner.iter] = {k: v.item() for k, v in outputs.items()}


class KillAt(Hook):
    """A kill (Ctrl-C) just before iteration ``at``."""

    def __init__(self, at: int):
        self.at = at

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter == self.at:
            raise KeyboardInterrupt(f'killed before iteration {self.at}')


def train(config: str, options: dict, work_dir, hooks=(), resume=False):
    """Train ``config`` (seeded, deterministic); the recorded losses and the
    final weights."""
    options = dict(options, **NOT_SERIALISED,
                   randomness=dict(seed=0, deterministic=True))
    cfg = load_test_config(config, options, work_dir)
    if resume:
        cfg.resume, cfg.load_from = True, resume_point(str(work_dir))
    runner = build_runner(cfg, config, prepare_device(cfg))
    record = Record()
    for hook in (record, *hooks):
        runner.register_hook(hook)
    runner.train()
    return record.losses, runner.model.state_dict()


def run(coco_root, work_dir, hooks=(), resume=False):
    """Mask R-CNN + the small SparX-Mamba, validated and saved every
    epoch, one checkpoint kept."""
    return train(CONFIG, dict(coco_options(coco_root), **SMALL_SPARX, **{
        'train_cfg.max_epochs': EPOCHS, 'train_cfg.val_interval': 1,
        'default_hooks.checkpoint.interval': 1,
        'default_hooks.checkpoint.max_keep_ckpts': 1}), work_dir, hooks,
        resume)


@pytest.fixture(scope='module')
def uninterrupted(coco_root, tmp_path_factory):
    return run(coco_root, tmp_path_factory.mktemp('straight'))


def assert_same_run(resumed, reference, first_resumed_iter,
                    iters=2 * EPOCHS):
    losses, weights = resumed
    ref_losses, ref_weights = reference
    assert sorted(losses) == list(range(first_resumed_iter, iters))
    for it, terms in losses.items():
        assert terms == ref_losses[it], f'iteration {it}'
    assert weights.keys() == ref_weights.keys()
    for key in weights:
        assert torch.equal(weights[key], ref_weights[key]), key


def test_config_carries_the_hooks(coco_root, tmp_path):
    cfg = load_test_config(CONFIG, coco_options(coco_root), tmp_path)
    assert cfg.default_hooks.checkpoint.type == 'SafeCheckpointHook'
    assert dict(type='RandomStateHook') in cfg.custom_hooks


def test_killed_after_a_checkpoint_resumes_bit_exactly(
        coco_root, tmp_path, uninterrupted):
    with pytest.raises(KeyboardInterrupt):
        run(coco_root, tmp_path, [KillAt(3)])
    assert resume_point(str(tmp_path)).endswith('epoch_1.pth')
    assert_same_run(run(coco_root, tmp_path, resume=True), uninterrupted, 2)


def test_killed_while_writing_a_checkpoint_loses_nothing(
        coco_root, tmp_path, uninterrupted, monkeypatch):
    real_replace = os.replace

    def killed_at_epoch_2(src, dst):
        if str(dst).endswith('epoch_2.pth'):
            raise KeyboardInterrupt('killed while writing epoch_2.pth')
        return real_replace(src, dst)

    monkeypatch.setattr(safe_checkpoint.os, 'replace', killed_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run(coco_root, tmp_path)
    monkeypatch.setattr(safe_checkpoint.os, 'replace', real_replace)
    # The half-written file is gone, the older checkpoint kept (although
    # max_keep_ckpts is 1) and still named by last_checkpoint.
    names = sorted(os.listdir(tmp_path))
    assert 'epoch_2.pth' not in names and 'epoch_2.pth.part' not in names
    assert resume_point(str(tmp_path)).endswith('epoch_1.pth')
    # A SIGKILL leaves its part file behind: resume never reads it.
    with open(tmp_path / 'epoch_2.pth.part', 'wb') as f:
        f.write(b'half a checkpoint')
    assert_same_run(run(coco_root, tmp_path, resume=True), uninterrupted, 2)
    assert not any(n.endswith('.part') for n in os.listdir(tmp_path))
    assert sorted(n for n in os.listdir(tmp_path) if n.endswith('.pth')) \
        == [f'epoch_{EPOCHS}.pth']


class SignalAt(Hook):
    """SIGTERM (or ``signum``) to this process while iteration ``at``
    trains: Slurm's preemption, mid-epoch."""

    def __init__(self, at: int, signum: int = signal.SIGTERM):
        self.at, self.signum = at, signum

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter == self.at:
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGUSR1])
def test_preemption_saves_mid_epoch_and_resumes_bit_exactly(
        coco_root, tmp_path, uninterrupted, signum):
    """Signalled while iteration 2 (epoch 2's first) trains: it finishes,
    iter_3.pth is written and named by last_checkpoint, the run exits 75;
    the resume trains iterations 3, 4, 5 only, to the same weights."""
    handler = signal.getsignal(signum)
    with pytest.raises(SystemExit) as stop:
        run(coco_root, tmp_path, [PreemptionHook(), SignalAt(2, signum)])
    assert stop.value.code == PREEMPTED_EXIT_CODE == 75
    assert signal.getsignal(signum) == handler  # restored
    assert resume_point(str(tmp_path)).endswith('iter_3.pth')
    assert_same_run(run(coco_root, tmp_path, [PreemptionHook()],
                        resume=True), uninterrupted, 3)


def test_train_tool_installs_the_preemption_hook(coco_root, tmp_path):
    from tools.train import stop_cleanly_on_preemption
    cfg = load_test_config(CONFIG, coco_options(coco_root), tmp_path)
    stop_cleanly_on_preemption(cfg)
    stop_cleanly_on_preemption(cfg)  # once
    assert [h for h in cfg.custom_hooks
            if h['type'] == 'PreemptionHook'] == [dict(type='PreemptionHook')]


def run_upernet(ade_root, work_dir, hooks=(), resume=False):
    """The UperNet demo, small, 6 iterations, validated and saved every
    2."""
    return train(DEMO_SEG, dict(SMALL_UPERNET, **{
        'train_dataloader.dataset.data_root': ade_root,
        'val_dataloader.dataset.data_root': ade_root,
        'test_dataloader.dataset.data_root': ade_root,
        'train_cfg.max_iters': 6, 'train_cfg.val_interval': 2,
        'default_hooks.checkpoint.interval': 2}), work_dir, hooks, resume)


def test_iteration_based_run_resumes_bit_exactly(ade_root, tmp_path):
    reference = run_upernet(ade_root, tmp_path / 'straight')
    with pytest.raises(KeyboardInterrupt):
        run_upernet(ade_root, tmp_path / 'killed', [KillAt(5)])
    assert resume_point(str(tmp_path / 'killed')).endswith('iter_4.pth')
    assert_same_run(run_upernet(ade_root, tmp_path / 'killed', resume=True),
                    reference, 4, 6)


def test_resume_with_nothing_to_resume_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match='nothing to resume'):
        resume_point(str(tmp_path))
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'gone.pth'))
    with pytest.raises(FileNotFoundError, match='does not exist'):
        resume_point(str(tmp_path))
    from tools.train import main
    with pytest.raises(FileNotFoundError, match='no such checkpoint'):
        main([CONFIG, '--work-dir', str(tmp_path), '--resume',
              str(tmp_path / 'missing.pth')])


def test_atomic_write_leaves_no_part_file_when_interrupted(tmp_path,
                                                           monkeypatch):
    target = tmp_path / 'ckpt.pth'
    safe_checkpoint.write_atomically(b'old', str(target))

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(safe_checkpoint.os, 'fsync', interrupted)
    with pytest.raises(KeyboardInterrupt):
        safe_checkpoint.write_atomically(b'new and longer', str(target))
    assert target.read_bytes() == b'old'
    assert os.listdir(tmp_path) == ['ckpt.pth']
