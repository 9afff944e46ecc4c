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

BACKEND = 'mmsparx_atomic_local'
PART = '.part'


def write_atomically(data: Union[bytes, str], filepath: str) -> None:
    """Write ``data`` to ``filepath + '.part'``, flush it to disk and rename
    it over ``filepath``; the part file goes if anything interrupts."""
    os.makedirs(osp.dirname(osp.abspath(filepath)), exist_ok=True)
    part = str(filepath) + PART
    mode = 'wb' if isinstance(data, bytes) else 'w'
    try:
        with open(part, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(part, filepath)
    except BaseException:
        if osp.exists(part):
            os.remove(part)
        raise


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
        for step_id in old:
            path = self.file_backend.join_path(
                self.out_dir, self.filename_tmpl.format(step_id))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
