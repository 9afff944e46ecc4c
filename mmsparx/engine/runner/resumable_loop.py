"""An epoch-based training loop that resumes in the middle of an epoch.

mmengine's ``EpochBasedTrainLoop`` restarts the epoch from its first batch
on resume. With checkpoints saved by iteration (``default_hooks.checkpoint=
dict(by_epoch=False, ...)``) a checkpoint taken after batch k of an epoch
then trains batches 0..k-1 a second time: more iterations than the
schedule, shifted learning rates, a negative ETA, and a run that no longer
matches the interrupted one.

:class:`ResumableEpochBasedTrainLoop` skips the k batches the checkpoint
had already trained. The epoch's order is the same (the sampler is seeded
by seed + epoch), and the skip costs no data loading and no random numbers
in this process: with ``num_workers=0`` only the batch sampler's indices
are drawn; with workers their batches are fetched and dropped, so the
workers' own random streams advance exactly as in the interrupted run.
Whoever must act after the skip (``RandomStateHook`` restores the random
states there) registers with :meth:`after_skip`.

:class:`~mmsparx.engine.hooks.SafeCheckpointHook` swaps a plain
``EpochBasedTrainLoop`` for this one when it saves by iteration; a config
may also name it: ``train_cfg = dict(type='ResumableEpochBasedTrainLoop',
max_epochs=12)``.
"""
from __future__ import annotations

from typing import Callable, List

from mmengine.registry import LOOPS
from mmengine.runner import EpochBasedTrainLoop
from torch.utils.data.dataloader import _SingleProcessDataLoaderIter


def _skip_batches(iterator, count: int) -> None:
    """Advance a DataLoader iterator by ``count`` batches, loading nothing
    when the batches would be loaded in this process."""
    if isinstance(iterator, _SingleProcessDataLoaderIter):
        for _ in range(count):
            iterator._next_index()  # indices only: no image is read
    else:
        for _ in range(count):
            next(iterator)  # workers load it (their streams advance)


@LOOPS.register_module()
class ResumableEpochBasedTrainLoop(EpochBasedTrainLoop):
    """``EpochBasedTrainLoop`` (same arguments) that continues a resumed
    epoch at the batch where its checkpoint was saved."""

    def batches_to_skip(self) -> int:
        """Batches of the current epoch that the resumed checkpoint had
        trained (0 at an epoch's start)."""
        done = self._iter - self._epoch * len(self.dataloader)
        if done < 0 or done > len(self.dataloader):
            # Not a mid-epoch position of this data: the batch size or the
            # data set changed since the checkpoint. Train the whole epoch.
            if not getattr(self, '_warned', False):
                self._warned = True
                self.runner.logger.warning(
                    f'resumed at iteration {self._iter}, epoch '
                    f'{self._epoch}: with {len(self.dataloader)} batches '
                    'per epoch that is no position inside this epoch (the '
                    'batch size or the data changed since the checkpoint); '
                    'the epoch is trained from its first batch')
            return 0
        return done

    def after_skip(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the batches already trained are skipped
        (before the first new batch is drawn)."""
        self._after_skip: List[Callable[[], None]] = getattr(
            self, '_after_skip', [])
        self._after_skip.append(callback)

    def run_epoch(self) -> None:
        # Computed before the hooks, which may ask for it (RandomStateHook).
        self.pending_skip = self.batches_to_skip()
        self.runner.call_hook('before_train_epoch')
        self.runner.model.train()
        batches = iter(self.dataloader)
        skip, self.pending_skip = self.pending_skip, 0
        if skip:
            _skip_batches(batches, skip)
            self.runner.logger.info(
                f'resumed in the middle of epoch {self._epoch + 1}: skipped '
                f'its first {skip} of {len(self.dataloader)} batches, which '
                'the checkpoint had trained')
        for callback in getattr(self, '_after_skip', []):
            callback()
        self._after_skip = []
        for idx, data_batch in enumerate(batches, start=skip):
            self.run_iter(idx, data_batch)
        self.runner.call_hook('after_train_epoch')
        self._epoch += 1


def adopt(loop: EpochBasedTrainLoop) -> ResumableEpochBasedTrainLoop:
    """The same loop (its dataloader, counters and intervals) as a
    :class:`ResumableEpochBasedTrainLoop`."""
    resumable = ResumableEpochBasedTrainLoop.__new__(
        ResumableEpochBasedTrainLoop)
    resumable.__dict__.update(loop.__dict__)
    return resumable
