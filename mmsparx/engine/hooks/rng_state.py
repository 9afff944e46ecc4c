"""Every random-number state in the checkpoint, so a resumed run continues
the interrupted one bit for bit.

mmengine re-seeds on resume: the data order (sampler seed + epoch) comes
back, but the streams that augmentations (NumPy, Python ``random``), drop
path and dataloader seeds (torch) have advanced do not; losses after a
resume then differ from the uninterrupted run. This hook stores the states
of Python, NumPy, torch CPU and every CUDA device, per rank, and puts them
back at the point where the interrupted run stood:

* they are taken after each training iteration and epoch (before the
  checkpoint hook saves), gathered from every rank when distributed (then
  after each epoch only, unless checkpoints are saved by iteration);
* validation runs between the save and the next iteration: it gets the
  states restored after it, so how often one validates never changes the
  training stream (and a resumed run, which skips that validation, agrees);
* an iteration-based loop replays the data of the iterations already done
  when it resumes (consuming random numbers): the states are restored after
  that replay, just before the first new batch is drawn; an epoch-based one
  resumed mid-epoch
  (:class:`~mmsparx.engine.runner.ResumableEpochBasedTrainLoop`)
  gets them after it has skipped the batches already trained.

Dataloader workers re-seed from the run's seed each epoch; persistent
workers (``persistent_workers=True`` with ``num_workers > 0``) keep their
streams across epochs in other processes that no checkpoint can hold, so an
epoch-based resume with them is exact only when every epoch re-seeds: the
hook warns then.
"""
from __future__ import annotations

import random
from typing import List, Optional

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import CheckpointHook, Hook
from mmengine.registry import HOOKS

KEY = 'rng_states'


def capture() -> dict:
    """This process's random states, as tensors and builtins only (the safe
    loader reads them without any allow-listing)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return dict(
        python=random.getstate(),
        numpy=dict(name=name, keys=torch.from_numpy(keys.astype(np.int64)),
                   pos=int(pos), has_gauss=int(has_gauss),
                   gauss=float(gauss)),
        torch=torch.get_rng_state(),
        cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available()
        else [])


def restore(states: dict) -> None:
    """Put back what :func:`capture` took."""
    random.setstate(_as_tuple(states['python']))
    npy = states['numpy']
    np.random.set_state((npy['name'], npy['keys'].numpy().astype(np.uint32),
                         npy['pos'], npy['has_gauss'], npy['gauss']))
    torch.set_rng_state(states['torch'])
    if states['cuda'] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states['cuda'])


def _as_tuple(state):
    # random.setstate wants tuples; a round trip through a checkpoint may
    # hand back lists.
    if isinstance(state, (list, tuple)):
        return tuple(_as_tuple(s) for s in state)
    return state


class _SkipReplay:
    """Stands in for the loop's data iterator while the loop replays the
    iterations done before the resume: the hook has replayed them already
    (so the states it restores afterwards are not consumed again)."""

    def __init__(self, iterator, skips: int):
        self.iterator, self.skips = iterator, skips

    def __iter__(self):
        return self

    def __next__(self):
        if self.skips > 0:
            self.skips -= 1
            return None
        return next(self.iterator)


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Save every rank's random-number states in each checkpoint and restore
    them on resume (see the module docstring). Add it to any config:
    ``custom_hooks = [dict(type='RandomStateHook')]``."""

    # Before CheckpointHook (VERY_LOW) in after_train_*, so the states it
    # saves are the ones taken after the iteration.
    priority = 'LOW'

    def __init__(self) -> None:
        self._latest: Optional[List[dict]] = None
        self._resumed: Optional[List[dict]] = None
        self._before_val: Optional[dict] = None
        self._per_iter = True

    # -- taking and saving ------------------------------------------------
    def _take(self) -> None:
        own = capture()
        self._latest = all_gather_object(own) if get_world_size() > 1 \
            else [own]

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        # Gathering costs a collective: only where a checkpoint may follow
        # (iteration-based saving), else at the epoch's end only.
        if self._per_iter:
            self._take()

    def after_train_epoch(self, runner) -> None:
        self._take()

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self._latest is not None:
            checkpoint[KEY] = self._latest

    def before_val(self, runner) -> None:
        self._before_val = capture()

    def after_val(self, runner) -> None:
        if self._before_val is not None:
            restore(self._before_val)
            self._before_val = None

    # -- resuming ---------------------------------------------------------
    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        states = checkpoint.get(KEY)
        if not runner._resume or states is None:
            if runner._resume:
                runner.logger.warning(
                    'the checkpoint holds no random states (saved without '
                    'RandomStateHook): the resumed run will not repeat the '
                    'interrupted one exactly')
            return
        if len(states) != get_world_size():
            runner.logger.warning(
                f'the checkpoint holds random states of {len(states)} '
                f'processes, this run has {get_world_size()}: rank r takes '
                'those of rank r mod that count, so the run is not exact')
        self._resumed = states[get_rank() % len(states)]

    def before_train(self, runner) -> None:
        self._per_iter = get_world_size() == 1 or any(
            isinstance(hook, CheckpointHook) and not hook.by_epoch
            for hook in runner.hooks)
        if self._resumed is None:
            return
        loader = runner.train_loop.dataloader
        if getattr(loader, 'persistent_workers', False) and \
                getattr(loader, 'num_workers', 0) > 0 and \
                not hasattr(runner.train_loop, 'dataloader_iterator'):
            runner.logger.warning(
                'persistent dataloader workers keep their random streams '
                'across epochs in other processes: the resumed run repeats '
                'the interrupted one exactly only with persistent_workers='
                'False (or num_workers=0)')

    def before_train_epoch(self, runner) -> None:
        if self._resumed is None:
            return
        loop = runner.train_loop
        if getattr(loop, 'pending_skip', 0):
            # A mid-epoch resume (ResumableEpochBasedTrainLoop): the states
            # were taken after the batches the loop is about to skip.
            loop.after_skip(lambda: self._restore(runner))
            return
        done = loop.iter if hasattr(loop, 'dataloader_iterator') else 0
        if done:
            # The loop replays `done` batches right after this hook: replay
            # them here, restore, and let the loop's replay be a no-op.
            for _ in range(done):
                next(loop.dataloader_iterator)
            loop.dataloader_iterator = _SkipReplay(loop.dataloader_iterator,
                                                   done)
        self._restore(runner)

    def _restore(self, runner) -> None:
        restore(self._resumed)
        self._resumed = None
        runner.logger.info('random states restored from the checkpoint')
