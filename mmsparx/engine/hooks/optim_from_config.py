"""Resume with the optimizer settings of the config, not of the checkpoint.

``--resume`` restores everything the checkpoint holds, the learning rate
included: after a NaN stop, resuming with a lower
``optim_wrapper.optimizer.lr`` silently trains with the old one again and
fails the same way. :class:`OptimFromConfigHook` (``tools/train.py ...
--resume CKPT --optim-from-config``) keeps what makes the run continue
(weights, epoch and iteration counters, random states, the optimizer's
moments) but takes the optimizer's hyper-parameters (lr, weight decay,
momentum, ...) and the parameter schedulers from the config, advanced to
the resumed iteration: the learning rate is then what the config's
schedule gives at that point.

The runner builds the optimizer and the schedulers from the config before
it resumes (``before_run`` sees them) and overwrites both while resuming;
``before_train`` puts the config's back and replays the schedule.
"""
from __future__ import annotations

import copy
from typing import Dict, Iterator, List, Tuple

from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import EpochBasedTrainLoop


def _optimizers(optim_wrapper) -> Iterator[Tuple[str, object]]:
    """(name, torch optimizer) of an OptimWrapper or OptimWrapperDict."""
    if hasattr(optim_wrapper, 'optimizer'):
        yield '', optim_wrapper.optimizer
    else:
        for name, wrapper in optim_wrapper.items():
            yield name, wrapper.optimizer


def _schedulers(param_schedulers) -> List:
    if param_schedulers is None:
        return []
    if isinstance(param_schedulers, dict):
        return [s for group in param_schedulers.values() for s in group]
    return list(param_schedulers)


def _settings(optim_wrapper) -> Dict[str, List[dict]]:
    """Every param group's hyper-parameters (all but the parameters)."""
    return {name: [{k: copy.deepcopy(v) for k, v in group.items()
                    if k != 'params'} for group in optimizer.param_groups]
            for name, optimizer in _optimizers(optim_wrapper)}


def _first_lr(optim_wrapper) -> float:
    return next(_optimizers(optim_wrapper))[1].param_groups[0]['lr']


@HOOKS.register_module()
class OptimFromConfigHook(Hook):
    """On ``--resume``: the checkpoint's weights, counters, random states
    and optimizer moments, the config's optimizer settings and schedule
    (see the module docstring). Without a resume it does nothing."""

    priority = 'NORMAL'

    def before_run(self, runner) -> None:
        # Built from the config; the resume has not touched them yet.
        self._settings = _settings(runner.optim_wrapper)
        self._schedules = [copy.deepcopy(s.state_dict())
                           for s in _schedulers(runner.param_schedulers)]

    def before_train(self, runner) -> None:
        if not getattr(runner, '_resume', False):
            runner.logger.warning(
                'OptimFromConfigHook (--optim-from-config) acts on a resume '
                'only; this run starts from scratch with the config\'s '
                'optimizer anyway')
            return
        was = _first_lr(runner.optim_wrapper)
        for name, optimizer in _optimizers(runner.optim_wrapper):
            for group, settings in zip(optimizer.param_groups,
                                       self._settings[name]):
                group.update(copy.deepcopy(settings))
        schedulers = _schedulers(runner.param_schedulers)
        for scheduler, state in zip(schedulers, self._schedules):
            scheduler.load_state_dict(copy.deepcopy(state))
        self._replay(runner, schedulers)
        runner.logger.info(
            f'--optim-from-config: optimizer settings and schedule from the '
            f'config; lr at iteration {runner.iter}: '
            f'{_first_lr(runner.optim_wrapper):.6g} (the checkpoint had '
            f'{was:.6g}); weights, counters, random states and optimizer '
            'moments from the checkpoint')

    @staticmethod
    def _replay(runner, schedulers: List) -> None:
        """Step the fresh schedulers as ParamSchedulerHook would have up to
        the resumed point: the per-iteration ones after each iteration,
        the per-epoch ones after each finished epoch."""
        per_iter = [s for s in schedulers if not s.by_epoch]
        per_epoch = [s for s in schedulers if s.by_epoch]
        loop = runner.train_loop
        epoch_length = len(loop.dataloader) \
            if isinstance(loop, EpochBasedTrainLoop) else 0
        epochs = 0
        for done in range(1, runner.iter + 1):
            for scheduler in per_iter:
                scheduler.step()
            if epoch_length and done % epoch_length == 0 and \
                    epochs < runner.epoch:
                epochs += 1
                for scheduler in per_epoch:
                    scheduler.step()
        for _ in range(epochs, runner.epoch if epoch_length else 0):
            for scheduler in per_epoch:
                scheduler.step()
