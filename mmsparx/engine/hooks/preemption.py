"""Preemption that loses nothing: a checkpoint at the next iteration's end.

Slurm sends SIGTERM when it preempts a job or its time is up (and, with
``sbatch --signal=USR1@120``, SIGUSR1 that long before). Unhandled, SIGTERM
ends training at once and everything since the last checkpoint is trained
again. :class:`PreemptionHook` instead lets the current iteration finish,
writes a resumable checkpoint with the position inside the epoch
(``iter_N.pth``, named by ``last_checkpoint``), and exits with
:data:`PREEMPTED_EXIT_CODE`: ``tools/train.py --resume`` continues at the
next batch, no iteration trained twice, bit-exactly with
``RandomStateHook``. In a distributed run every rank stops after the same
iteration (the signal is shared by an all-reduce each iteration).
"""
from __future__ import annotations

import os.path as osp
import signal
from typing import Dict, Optional

import torch
from mmengine.dist import (all_reduce, get_comm_device, get_world_size,
                           is_main_process)
from mmengine.dist.utils import get_default_group
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import EpochBasedTrainLoop

from mmsparx.engine.hooks.safe_checkpoint import BACKEND
from mmsparx.engine.runner.resumable_loop import (ResumableEpochBasedTrainLoop,
                                                  adopt)
from mmsparx.fileio import write_atomically

# EX_TEMPFAIL (sysexits.h): stopped for now, resume later. slurm_train.sh
# requeues the job on it; a cluster may list it in slurm.conf RequeueExit.
PREEMPTED_EXIT_CODE = 75
SIGNALS = ('SIGTERM', 'SIGUSR1')


def _ignore_in_workers(init_fn):
    """A DataLoader ``worker_init_fn`` that also makes the worker ignore
    the stop signals: Slurm signals every process of the job, and a worker
    ended by it would fail the iteration that is to finish."""
    def init(worker_id: int) -> None:
        for name in SIGNALS:
            signal.signal(getattr(signal, name), signal.SIG_IGN)
        if init_fn is not None:
            init_fn(worker_id)
    return init


@HOOKS.register_module()
class PreemptionHook(Hook):
    """On SIGTERM or SIGUSR1: finish the iteration, save, exit 75."""

    priority = 'VERY_LOW'  # after the other hooks' after_train_iter

    def __init__(self) -> None:
        self.received: Optional[int] = None
        self._previous: Dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        self.received = signum

    def before_run(self, runner) -> None:
        loop = getattr(runner, '_train_loop', None)
        if type(loop) is EpochBasedTrainLoop:
            # Resumes where the checkpoint was taken, mid-epoch included.
            runner._train_loop = adopt(loop)
        dataloader = getattr(runner._train_loop, 'dataloader', None)
        if getattr(dataloader, 'num_workers', 0):
            dataloader.worker_init_fn = _ignore_in_workers(
                dataloader.worker_init_fn)
        for name in SIGNALS:
            signum = getattr(signal, name)
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: leave it as it is
                return

    def after_run(self, runner) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _stop_requested(self) -> bool:
        flag = torch.tensor([0 if self.received is None else 1])
        if get_world_size() > 1:
            flag = flag.to(get_comm_device(get_default_group()))
            all_reduce(flag, op='max')
        return bool(flag.item())

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        if not self._stop_requested():
            return
        loop = runner.train_loop
        filename = f'iter_{runner.iter + 1}.pth'
        if isinstance(loop, EpochBasedTrainLoop) and not isinstance(
                loop, ResumableEpochBasedTrainLoop):
            runner.logger.warning(
                f'{type(loop).__name__} cannot resume mid-epoch: the resume '
                'trains this epoch from its first batch again')
        # by_epoch=False stores the iterations done and the current epoch,
        # the position ResumableEpochBasedTrainLoop resumes at.
        runner.save_checkpoint(runner.work_dir, filename, by_epoch=False,
                               backend_args=dict(backend=BACKEND))
        path = osp.join(runner.work_dir, filename)
        if is_main_process():
            write_atomically(path, osp.join(runner.work_dir,
                                            'last_checkpoint'))
        name = 'a stop signal' if self.received is None else \
            signal.Signals(self.received).name
        runner.logger.warning(
            f'{name}: stopped after iteration {runner.iter + 1}, saved '
            f'{path}; continue with tools/train.py CONFIG --resume (exit '
            f'status {PREEMPTED_EXIT_CODE})')
        self.after_run(runner)
        raise SystemExit(PREEMPTED_EXIT_CODE)
