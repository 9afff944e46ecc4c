"""Checkpoints that an interrupted write can never lose.

mmengine's ``CheckpointHook`` (0.10.7) deletes the oldest kept checkpoint
*before* writing the new one, writes the file in place and only then
updates ``last_checkpoint``: a kill during the write leaves a half-written
``epoch_N.pth`` and, with ``max_keep_ckpts=1``, no complete checkpoint at
all; a kill before the first ``last_checkpoint`` makes ``--resume`` start
from scratch. :class:`SafeCheckpointHook` orders it the safe way:

1. the checkpoint is written to ``NAME.part`` and renamed over ``NAME``
   (a rename is atomic on one file system), so ``NAME`` is whole or absent;
2. ``last_checkpoint`` is replaced the same way, after the rename;
3. only then are checkpoints beyond ``max_keep_ckpts`` removed.

A ``.part`` left by a killed process is never read by resume and is
removed by the next save.

Two more guarantees:

* ``max_keep_ckpts`` never removes the newest checkpoint that
  :class:`~mmsparx.engine.hooks.FiniteCheckHook` verified (its weights
  gave finite losses in a forward pass): a step that poisons the weights
  without a NaN loss would otherwise leave only poisoned checkpoints.
  That file is held beyond the count until a newer one is verified (so
  there may be one file more than ``max_keep_ckpts``).
* Saving by iteration (``by_epoch=False``) in an epoch-based loop swaps
  mmengine's ``EpochBasedTrainLoop`` for
  :class:`~mmsparx.engine.hooks.ResumableEpochBasedTrainLoop`, so a checkpoint
  taken in the middle of an epoch resumes there instead of training the
  epoch's first batches again; another epoch-based loop is refused at the
  start with the fix.
"""
from __future__ import annotations

import glob
import os
import os.path as osp
from collections import deque
from pathlib import Path
from typing import Union

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook
from mmengine.registry import HOOKS
from mmengine.runner import EpochBasedTrainLoop

from mmsparx.engine.runner.resumable_loop import (ResumableEpochBasedTrainLoop,
                                                  adopt)
from mmsparx.engine.weight_guard import HELD_KEY, VERIFIED_KEY
from mmsparx.fileio.writing import PART, write_atomically

BACKEND = 'mmsparx_atomic_local'


@register_backend(BACKEND)
class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend with atomic ``put``/``put_text``."""

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        write_atomically(obj, str(filepath))

    def put_text(self, obj: str, filepath: Union[str, Path],
                 encoding: str = 'utf-8') -> None:
        write_atomically(obj.encode(encoding), str(filepath))


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """``CheckpointHook`` (same arguments) whose saves survive any kill:
    atomic file and ``last_checkpoint`` writes, old checkpoints removed only
    after the new one is complete. Remote ``out_dir``s (``backend_args``
    naming another backend) keep mmengine's own writes."""

    def __init__(self, *args, **kwargs) -> None:
        local = kwargs.get('backend_args') is None and \
            kwargs.get('file_client_args') is None and \
            '://' not in str(kwargs.get('out_dir') or '')
        if local:
            kwargs['backend_args'] = dict(backend=BACKEND)
        super().__init__(*args, **kwargs)
        self.atomic = local

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        if not self.atomic:
            return super()._save_checkpoint_with_step(runner, step, meta)
        filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        # A deque with maxlen (absent when max_keep_ckpts <= 0): appending
        # to it would forget a checkpoint without deleting its file.
        keep = list(getattr(self, 'keep_ckpt_ids', []))
        if self.max_keep_ckpts > 0 and (not keep or keep[-1] != step):
            keep.append(step)
        if self.max_keep_ckpts > 0:
            # What is kept once this save is done, stored in the checkpoint
            # itself so a resumed run removes the right files later.
            runner.message_hub.update_info(
                'keep_ckpt_ids', keep[-self.max_keep_ckpts:])
        old_held, held, kept = self._plan_held(runner, keep)
        if is_main_process():
            for stale in glob.glob(osp.join(self.out_dir, '*' + PART)):
                os.remove(stale)
        runner.save_checkpoint(
            self.out_dir, filename, self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler, meta=meta,
            by_epoch=self.by_epoch, backend_args=self.backend_args,
            **self.args)
        if self.max_keep_ckpts > 0:
            old, keep = keep[:-self.max_keep_ckpts], keep[
                -self.max_keep_ckpts:]
            self.keep_ckpt_ids = deque(keep, self.max_keep_ckpts)
        else:
            old = []
        if not is_main_process():
            return
        write_atomically(self.last_ckpt,
                         osp.join(runner.work_dir, 'last_checkpoint'))
        # Only now that the new checkpoint is whole and named.
        doomed = [self.file_backend.join_path(
            self.out_dir, self.filename_tmpl.format(step_id))
            for step_id in old]
        if old_held and old_held != held and self.max_keep_ckpts > 0:
            doomed.append(old_held)
        for path in doomed:
            if osp.abspath(path) not in kept | {held} and \
                    self.file_backend.isfile(path):
                self.file_backend.remove(path)

    def _plan_held(self, runner, keep: list):
        """(the file held so far, the one to hold after this save, the
        files kept by count): the held one is the newest verified
        checkpoint when max_keep_ckpts would drop it. Set before the save,
        so a resumed run knows what it holds."""
        hub = runner.message_hub
        old_held = hub.get_info(HELD_KEY)
        verified = hub.get_info(VERIFIED_KEY)
        kept = {osp.abspath(self.file_backend.join_path(
            self.out_dir, self.filename_tmpl.format(step)))
            for step in keep[-self.max_keep_ckpts:]} \
            if self.max_keep_ckpts > 0 else set()
        # Only files of this hook's own: a resume from a file elsewhere
        # is verified too, but never held (and so never removed).
        held = osp.abspath(verified) if self.max_keep_ckpts > 0 and \
            verified and self._own(verified) and \
            osp.abspath(verified) not in kept else None
        hub.update_info(HELD_KEY, held)
        return (old_held if old_held and self._own(old_held) else None,
                held, kept)

    def _own(self, path: str) -> bool:
        """Whether ``path`` is a checkpoint file in this hook's out_dir."""
        try:
            return osp.isfile(path) and osp.samefile(
                osp.dirname(osp.abspath(path)), self.out_dir)
        except OSError:  # out_dir not made yet
            return False

    def after_train(self, runner) -> None:
        """The run finished and FiniteCheckHook verified its final
        checkpoint: the file held for recovery goes."""
        super().after_train(runner)
        hub = runner.message_hub
        held = hub.get_info(HELD_KEY)
        verified = hub.get_info(VERIFIED_KEY)
        if self.atomic and held and is_main_process() and self._own(held) \
                and not (verified and osp.abspath(verified) == held):
            os.remove(held)
            hub.update_info(HELD_KEY, None)

    def before_run(self, runner) -> None:
        super().before_run(runner)
        loop = getattr(runner, '_train_loop', None)
        if self.by_epoch or not isinstance(loop, EpochBasedTrainLoop) or \
                isinstance(loop, ResumableEpochBasedTrainLoop):
            return
        if type(loop) is EpochBasedTrainLoop:
            runner._train_loop = adopt(loop)
            return
        raise ValueError(
            f'default_hooks.checkpoint saves by iteration (by_epoch=False) '
            f'but the train loop {type(loop).__name__} is an epoch-based '
            'loop that cannot resume in the middle of an epoch: a resume '
            "from such a checkpoint would train the epoch's first batches "
            'again. Save by epoch (--cfg-options default_hooks.checkpoint.'
            'by_epoch=True), use train_cfg.type=ResumableEpochBasedTrainLoop'
            ' (mmengine\'s EpochBasedTrainLoop that resumes mid-epoch), or '
            'train by iteration (train_cfg=dict(type=\'IterBasedTrainLoop\','
            ' max_iters=N)).')
