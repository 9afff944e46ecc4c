"""Stop training at the first NaN / inf in an input image, a loss or the
weights, and name a checkpoint that is really good.

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

Finite losses do not make a step good: a learning rate far too high turns
weights of 1 into 1e4 in one step whose losses were fine, and only the
next forward is NaN. So after each step the weights and the optimizer
state are checked too (one fused max |x|): non-finite values, or a largest
|w| more than ``max_weight_growth`` (1000) times the one of the last
verified checkpoint (counted as at least 1), stop the run before that
step is saved. A checkpoint is *verified* when the next forward pass on
its weights gave finite losses (free: that is the next iteration's
forward); :class:`~mmsparx.engine.hooks.SafeCheckpointHook` never deletes the
newest verified one, whatever ``max_keep_ckpts`` says. On a stop after the
step, the message names the newest checkpoint file that loads and gives
finite losses on the failing batch (each candidate is loaded and run once;
the model is put back afterwards); the fix it prints resumes from it with
``tools/train.py ... --optim-from-config`` and a lower learning rate.

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

from mmsparx.engine.weight_guard import (VERIFIED_KEY, bare_model,
                                         forward_losses, last_good_checkpoint,
                                         optimizer_tensors, peak_abs,
                                         worst_parameters)

FIX_INPUT = ('Fix the data: look at that image file and the pipeline '
             'transforms that produce float values (normalisation by a zero '
             'std, a division, a corrupt or float .npy/.tif image), then '
             'resume.')
FIX_STEP = ('Fix the step: lower the learning rate or warm it up longer, '
            'clip gradients (optim_wrapper.clip_grad=dict(max_norm=...)), '
            'or check the loss for a log/division of zero; then resume with '
            'the new settings: tools/train.py CONFIG --resume {ckpt} '
            '--optim-from-config --cfg-options '
            'optim_wrapper.optimizer.lr=LOWER (--optim-from-config keeps the '
            'weights, counters and random states but takes the optimizer '
            'and the lr schedule from the config; a plain --resume brings '
            'the old learning rate back).')


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


def _image_tensors(inputs,
                   prefix: str = '') -> Iterator[Tuple[str, torch.Tensor]]:
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
    (before the step), loss or weight (after it, before any checkpoint is
    saved); see the module docstring.

    Args:
        check_inputs: check ``data_batch['inputs']`` before each iteration.
        check_losses: check each loss in the step's outputs after it.
        check_weights: check the parameters and the optimizer state after
            each step.
        max_weight_growth: the largest |w| may grow to this factor times
            its value at the last verified checkpoint (or the start of the
            run), counted as at least 1.0; beyond it the step is refused.
            A healthy run changes weights by a fraction per epoch.
    """

    priority = 'HIGH'

    def __init__(self, check_inputs: bool = True, check_losses: bool = True,
                 check_weights: bool = True,
                 max_weight_growth: float = 1e3) -> None:
        self.check_inputs = check_inputs
        self.check_losses = check_losses
        self.check_weights = check_weights
        self.max_weight_growth = float(max_weight_growth)
        self._reference = 1.0  # largest |w| the growth is measured from
        self._peak: Optional[float] = None  # largest |w| after the step
        self._seen: Optional[str] = None  # last_ckpt when the iter began
        self._unverified: Optional[Tuple[str, Optional[float]]] = None
        self._last_batch = None

    # -- verification bookkeeping ------------------------------------------
    @staticmethod
    def _last_ckpt(runner) -> Optional[str]:
        hub = getattr(runner, 'message_hub', None)
        return hub.get_info('last_ckpt') if hub is not None else None

    def before_train(self, runner) -> None:
        self._seen = self._last_ckpt(runner)
        model = getattr(runner, 'model', None)
        if model is not None and self.check_weights:
            self._peak = peak_abs(bare_model(model).parameters())
            self._reference = max(1.0, self._peak)
        # A resumed run's first forward verifies the file it resumed from.
        if getattr(runner, '_resume', False) and runner._load_from:
            self._unverified = (runner._load_from, self._peak)

    def _note_new_checkpoint(self, runner) -> None:
        """A checkpoint saved since the last iteration holds exactly the
        weights this iteration's forward uses."""
        current = self._last_ckpt(runner)
        if current is not None and current != self._seen:
            self._unverified = (current, self._peak)
        self._seen = current

    def _verified(self, runner) -> None:
        """This iteration's losses were finite: so were those of the
        weights in the checkpoint saved before it."""
        if self._unverified is None:
            return
        path, peak = self._unverified
        self._unverified = None
        runner.message_hub.update_info(VERIFIED_KEY, path)
        if peak is not None and peak == peak:
            self._reference = max(1.0, peak)

    # -- the checks ----------------------------------------------------------
    def before_train_iter(self, runner, batch_idx: int,
                          data_batch: Union[dict, tuple, list, None] = None
                          ) -> None:
        self._note_new_checkpoint(runner)
        if not self.check_inputs or not isinstance(data_batch, Mapping):
            return
        bad = self._bad_inputs(data_batch)
        if self._any_rank(bool(bad)):
            self._raise(runner, 'non-finite input image', bad, FIX_INPUT,
                        'Training stopped before this iteration ran')

    def after_train_iter(self, runner, batch_idx: int,
                         data_batch: Union[dict, tuple, list, None] = None,
                         outputs: Optional[dict] = None) -> None:
        losses_checked = self.check_losses and isinstance(outputs, Mapping)
        bad_losses = self._bad_losses(outputs) if losses_checked else []
        headline, bad_weights = self._bad_weights(runner)
        if self._any_rank(bool(bad_losses or bad_weights)):
            if bad_losses:
                headline, bad_weights = 'non-finite loss', bad_losses
            self._raise(runner, headline or 'non-finite loss or weights',
                        bad_weights, FIX_STEP, 'Training stopped before '
                        'this iteration was saved', data_batch)
        if losses_checked:
            self._verified(runner)
        self._last_batch = data_batch

    def after_train(self, runner) -> None:
        """Verify the final checkpoint (saved after the last iteration, so
        no next iteration does it) with a forward on the last batch; the
        model's buffers and mode are put back."""
        current = self._last_ckpt(runner)
        if not self.check_losses or self._last_batch is None or \
                current is None or current == self._seen:
            return
        model = bare_model(runner.model)
        buffers = {k: v.clone() for k, v in model.named_buffers()}
        training = model.training
        model.train()
        try:
            losses = forward_losses(model, self._last_batch)
            bad = [f'{k} = {v}' for k, v in losses.items() if not _finite(v)]
        except Exception as err:  # never fail a finished run over this
            bad = [f'its forward failed: {type(err).__name__}: {err}'
                   .split('\n')[0]]
        finally:
            model.train(training)
            for name, value in model.named_buffers():
                value.copy_(buffers[name])
        if not self._any_rank(bool(bad)):
            self._unverified = (current, self._peak)
            self._verified(runner)
            return
        verified = runner.message_hub.get_info(VERIFIED_KEY)
        runner.logger.warning(
            f'the final checkpoint {current} could not be verified on the '
            f'last batch ({", ".join(bad) or "failed on another rank"}); '
            + (f'the last verified checkpoint {verified} is kept.'
               if verified else 'no earlier checkpoint was verified.'))

    def _bad_weights(self, runner) -> Tuple[str, List[str]]:
        """('non-finite weights' or 'exploding weights', details), or
        ('', []) when the step left parameters and optimizer state sane."""
        model = getattr(runner, 'model', None)
        if not self.check_weights or model is None:
            return '', []
        model = bare_model(model)
        peak = peak_abs(model.parameters())
        self._peak = peak
        if not _finite(peak):
            return 'non-finite weights', [
                'parameters hold NaN/inf: ' + worst_parameters(model)]
        state_peak = peak_abs(optimizer_tensors(
            getattr(runner, 'optim_wrapper', None)))
        if not _finite(state_peak):
            return 'non-finite weights', [
                'the optimizer state (momenta) holds NaN/inf; parameters: '
                + worst_parameters(model)]
        if peak > self.max_weight_growth * self._reference:
            return 'exploding weights', [
                f'max |w| = {peak:.4g}, more than {self.max_weight_growth:g}'
                f' x {self._reference:.4g} (the largest |w| of the last '
                'verified checkpoint or of the start, at least 1; '
                'FiniteCheckHook max_weight_growth): '
                + worst_parameters(model)]
        return '', []

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

    def _raise(self, runner, headline: str, bad: List[str], fix: str,
               stopped: str, data_batch=None) -> None:
        iteration = runner.iter + 1  # as the log and iter_N.pth count
        where = f'iteration {iteration}'
        if isinstance(getattr(runner, 'train_loop', None),
                      EpochBasedTrainLoop):
            where += f' (epoch {runner.epoch + 1})'
        if get_world_size() > 1:
            where += f', rank {get_rank()}'
        details = '; '.join(bad) if bad else \
            'found on another rank (see its log)'
        kept, checkpoint = self._good_checkpoint(runner, data_batch)
        raise NonFiniteError(
            f'{headline} at {where}: {details}.\n'
            f'{stopped}; no checkpoint is written for it. {kept}.\n'
            + fix.format(ckpt=checkpoint or 'CKPT'))

    def _good_checkpoint(self, runner, data_batch) -> Tuple[str,
                                                            Optional[str]]:
        """(a sentence naming the checkpoint to resume from, its path)."""
        if isinstance(data_batch, Mapping) and \
                getattr(runner, 'model', None) is not None:
            # After the step: only a file whose forward is finite will do.
            found, rejected = last_good_checkpoint(runner, data_batch,
                                                   self._any_rank)
            newer = f' (newer ones fail: {"; ".join(rejected)})' \
                if rejected else ''
            if found:
                return (f'The last good checkpoint (it loads, and its '
                        f'forward on this batch gives finite losses): '
                        f'{found}{newer}', found)
            if rejected:
                return (f'No checkpoint in {runner.work_dir} gives finite '
                        f'losses on this batch: {"; ".join(rejected)}. If '
                        'the data is at fault, look at the images of this '
                        'batch; otherwise train again from the start',
                        None)
        last = osp.join(runner.work_dir, 'last_checkpoint')
        if osp.isfile(last):
            with open(last) as f:
                checkpoint = f.read().strip()
            return f'The last checkpoint is kept: {checkpoint}', checkpoint
        return (f'No checkpoint was saved yet in {runner.work_dir} (nothing '
                'to resume from)', None)


def _finite(value: float) -> bool:
    return value == value and value not in (float('inf'), float('-inf'))
