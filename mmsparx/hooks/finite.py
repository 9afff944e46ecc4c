"""Stop training at the first NaN / inf in an input image or a loss.

A non-finite value spreads silently: one NaN pixel makes every loss NaN,
the optimizer writes NaN into every weight, and the checkpoint hook then
saves (and keeps, dropping good ones) a model that is all NaN. mmdet's
``CheckInvalidLossHook`` does not fit here: it lives in mmdet's registry
only (no mmseg / mmpretrain config finds it), looks at the summed loss
every ``interval`` iterations (50 by default, so bad checkpoints can be
written first), never at the inputs, and fails with a bare "loss become
infinite or NaN!". :class:`FiniteCheckHook` checks every iteration, the
images before the step and each loss after it, and raises
:class:`NonFiniteError` naming the iteration, the image or loss and the
checkpoint that is still good.

Its priority (``HIGH``) is above ``CheckpointHook``'s ``VERY_LOW``, so the
error leaves ``after_train_iter`` before any checkpoint of the bad
iteration is written. When distributed, the ranks agree on the verdict
(one tiny all-reduce per check), so every rank stops instead of the good
ones hanging in the next gradient all-reduce.

    custom_hooks = [dict(type='FiniteCheckHook')]
"""
from __future__ import annotations

import os.path as osp
from typing import Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from mmengine.dist import all_reduce, get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import EpochBasedTrainLoop

FIX_INPUT = ('Fix the data: look at that image file and the pipeline '
             'transforms that produce float values (normalisation by a zero '
             'std, a division, a corrupt or float .npy/.tif image), then '
             'resume.')
FIX_LOSS = ('Fix the step: lower the learning rate or warm it up longer, '
            'clip gradients (optim_wrapper.clip_grad=dict(max_norm=...)), '
            'or check the loss for a log/division of zero; then resume from '
            'the kept checkpoint (tools/train.py CONFIG --resume).')


class NonFiniteError(FloatingPointError):
    """A NaN or inf reached the training step; the message says where."""


def _count_bad(tensor: torch.Tensor) -> Tuple[int, int]:
    """(NaN count, inf count); integer tensors (uint8 images) are always
    finite, so they cost nothing."""
    if not (tensor.is_floating_point() or tensor.is_complex()) or \
            bool(torch.isfinite(tensor).all()):
        return 0, 0
    nan = int(torch.isnan(tensor).sum())
    inf = int(torch.isinf(tensor).sum())
    return nan, inf


def _image_tensors(inputs, prefix: str = '') -> Iterator[Tuple[str,
                                                             torch.Tensor]]:
    """``(where, tensor)`` for each tensor in ``inputs``, however nested in
    lists (mmdet's per-image tensors) and dicts (multi-modal inputs)."""
    if isinstance(inputs, torch.Tensor):
        yield prefix, inputs
    elif isinstance(inputs, Mapping):
        for key, value in inputs.items():
            yield from _image_tensors(value, f'{prefix}.{key}')
    elif isinstance(inputs, (list, tuple)):
        for i, value in enumerate(inputs):
            yield from _image_tensors(value, f'{prefix}[{i}]')


def _image_path(data_batch: Mapping, index: Optional[int]) -> Optional[str]:
    """The file of batch item ``index``, from its data sample's metainfo
    (every toolbox's loader records ``img_path``)."""
    samples = data_batch.get('data_samples')
    if index is None or not isinstance(samples, Sequence) or \
            index >= len(samples):
        return None
    meta = getattr(samples[index], 'metainfo', None)
    if not isinstance(meta, Mapping):
        return None
    return meta.get('img_path') or meta.get('seg_map_path')


def _describe(nan: int, inf: int) -> str:
    return ' and '.join(f'{n} {what} value' + ('s' if n > 1 else '')
                        for n, what in ((nan, 'NaN'), (inf, 'inf')) if n)


@HOOKS.register_module()
class FiniteCheckHook(Hook):
    """Raise :class:`NonFiniteError` at the first non-finite input image
    (before the step) or loss (after it, before any checkpoint is saved).

    Args:
        check_inputs: check ``data_batch['inputs']`` before each iteration.
        check_losses: check each loss in the step's outputs after it.
    """

    priority = 'HIGH'

    def __init__(self, check_inputs: bool = True,
                 check_losses: bool = True) -> None:
        self.check_inputs = check_inputs
        self.check_losses = check_losses

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch: Union[dict, tuple, list, None] = None
                          ) -> None:
        if not self.check_inputs or not isinstance(data_batch, Mapping):
            return
        bad = self._bad_inputs(data_batch)
        if self._any_rank(bool(bad)):
            self._raise(runner, 'input image', bad, FIX_INPUT,
                        'Training stopped before this iteration ran')

    def after_train_iter(self, runner, batch_idx: int,
                         data_batch: Union[dict, tuple, list, None] = None,
                         outputs: Optional[dict] = None) -> None:
        if not self.check_losses or not isinstance(outputs, Mapping):
            return
        bad = self._bad_losses(outputs)
        if self._any_rank(bool(bad)):
            self._raise(runner, 'loss', bad, FIX_LOSS,
                        'Training stopped before this iteration was saved '
                        '(its step may have made the weights non-finite)')

    @staticmethod
    def _bad_inputs(data_batch: Mapping) -> List[str]:
        """One line per non-finite image: where in the batch, its file."""
        inputs = data_batch.get('inputs')
        if isinstance(inputs, torch.Tensor) and inputs.dim() == 4:
            items = list(enumerate(inputs))  # a stacked batch
        elif isinstance(inputs, (list, tuple)):
            items = list(enumerate(inputs))  # one tensor per image
        else:
            items = [(None, inputs)]
        found = []
        for index, item in items:
            prefix = 'inputs' if index is None else f'inputs[{index}]'
            for where, tensor in _image_tensors(item, prefix):
                nan, inf = _count_bad(tensor)
                if not nan and not inf:
                    continue
                path = _image_path(data_batch, index)
                found.append(where + (f' ({path})' if path else '') +
                             f': {_describe(nan, inf)}')
        return found

    @staticmethod
    def _bad_losses(outputs: Mapping) -> List[str]:
        """One line per non-finite loss: the loss terms first, then the
        total ``loss`` (mmengine sums the keys that contain 'loss')."""
        found = []
        keys = sorted((k for k in outputs if 'loss' in k),
                      key=lambda k: k == 'loss')
        for key in keys:
            value = outputs[key]
            if isinstance(value, torch.Tensor):
                tensor = value.detach()
            elif isinstance(value, (int, float)):
                tensor = torch.tensor(float(value), dtype=torch.float64)
            else:
                continue  # not a number (a model's extra output)
            nan, inf = _count_bad(tensor)
            if nan or inf:
                shown = tensor.float().flatten()[0].item() \
                    if tensor.numel() == 1 else _describe(nan, inf)
                found.append(f'{key} = {shown}')
        return found

    @staticmethod
    def _any_rank(bad: bool) -> bool:
        """True when any rank found a bad value, so all ranks stop."""
        if get_world_size() == 1:
            return bad
        flag = torch.tensor([float(bad)])
        all_reduce(flag, op='max')
        return bool(flag.item())

    @staticmethod
    def _raise(runner, what: str, bad: List[str], fix: str,
               stopped: str) -> None:
        iteration = runner.iter + 1  # as the log and iter_N.pth count
        where = f'iteration {iteration}'
        if isinstance(getattr(runner, 'train_loop', None),
                      EpochBasedTrainLoop):
            where += f' (epoch {runner.epoch + 1})'
        if get_world_size() > 1:
            where += f', rank {get_rank()}'
        details = '; '.join(bad) if bad else \
            'found on another rank (see its log)'
        last = osp.join(runner.work_dir, 'last_checkpoint')
        if osp.isfile(last):
            with open(last) as f:
                checkpoint = f.read().strip()
            kept = f'The last good checkpoint is kept: {checkpoint}'
        else:
            kept = (f'No checkpoint was saved yet in {runner.work_dir} '
                    f'(nothing to resume from)')
        raise NonFiniteError(
            f'non-finite {what} at {where}: {details}.\n'
            f'{stopped}; no checkpoint is written for it. {kept}.\n{fix}')
