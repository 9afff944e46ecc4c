"""Per-module training statistics in the log, to see *where* a model does not
learn: gradient norm, update size and output scale of each part.

A detector whose total loss falls while one head stays flat (Mask R-CNN's
RoI classifier at chance while its RPN learns) gives no clue in the usual
log. Every ``interval`` iterations this hook logs, per parameter group
(``backbone.stem``, ``backbone.stages.2``, ``neck``, ``rpn_head``,
``roi_head.bbox_head`` ...):

- ``grad/<group>``: L2 norm of the group's gradients of that step,
  before clipping (the sum of what clipping sees is their root sum of
  squares, so a group that eats the clip budget shows here);
- ``update/<group>``: |w_after - w_before| / |w_before|, the relative step
  the optimizer took (what learning rate, clipping and weight decay did);
- ``out_std/<module>``: standard deviation of each backbone output and
  neck level, from that step's forward pass.

They land in ``vis_data/scalars.json`` next to the losses (mmengine's
LoggerHook logs every ``train/`` scalar, each as the value of the last
statistics iteration: the names stay out of its smoothing pattern, which
would average over the last ``window_size`` statistics iterations).
Set ``interval`` to the logger's interval to see every one.

    custom_hooks = [dict(type='TrainStatsHook', interval=10)]
"""
from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Optional, Sequence

from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from torch import Tensor, nn

from mmsparx.engine.weight_guard import bare_model

# Children whose sub-modules get a group each (stages of a backbone, the
# two heads of a two-stage detector's RoI head).
SPLIT = {'backbone': ('stages', 'layers', 'downsamples'),
         'roi_head': ()}


def group_of(name: str) -> str:
    """The statistics group of a parameter name."""
    parts = name.split('.')
    if parts[0] in SPLIT and len(parts) > 2:
        if parts[1] in SPLIT[parts[0]] and parts[2].isdigit():
            return '.'.join(parts[:3])
        return '.'.join(parts[:2])
    return parts[0]


def _std(value) -> Optional[float]:
    if isinstance(value, Tensor) and value.is_floating_point():
        return value.detach().float().std().item()
    return None


@HOOKS.register_module()
class TrainStatsHook(Hook):
    """Gradient norm, relative update and output std per part, every
    ``interval`` iterations (see the module docstring)."""

    priority = 'LOW'

    def __init__(self, interval: int = 10,
                 outputs: Sequence[str] = ('backbone', 'neck')):
        if interval < 1:
            raise ValueError(f'interval must be >= 1, got {interval}')
        self.interval = interval
        self.outputs = tuple(outputs)
        self._grad_sq: Dict[str, float] = defaultdict(float)
        self._before: Dict[str, List[Tensor]] = {}
        self._out_std: Dict[str, float] = {}
        self._active = False
        self._handles: list = []

    def before_run(self, runner) -> None:
        model = bare_model(runner.model)
        self._groups: Dict[str, List[nn.Parameter]] = defaultdict(list)
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            group = group_of(name)
            self._groups[group].append(param)
            self._handles.append(param.register_post_accumulate_grad_hook(
                self._grad_hook(group)))
        for name in self.outputs:
            module = getattr(model, name, None)
            if isinstance(module, nn.Module):
                self._handles.append(module.register_forward_hook(
                    self._output_hook(name)))

    def after_run(self, runner) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _grad_hook(self, group: str):
        def hook(param: Tensor) -> None:
            if self._active and param.grad is not None:
                self._grad_sq[group] += param.grad.detach().float().pow(
                    2).sum().item()
        return hook

    def _output_hook(self, name: str):
        def hook(module, args, output) -> None:
            if not (self._active and module.training):
                return
            outs = output if isinstance(output, (tuple, list)) else [output]
            for index, out in enumerate(outs):
                std = _std(out)
                if std is not None:
                    self._out_std[f'{name}.{index}'] = std
        return hook

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        self._active = self.every_n_train_iters(runner, self.interval) or \
            runner.iter == 0
        if not self._active:
            return
        self._grad_sq.clear()
        self._out_std.clear()
        self._before = {group: [p.detach().clone() for p in params]
                        for group, params in self._groups.items()}

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        if not self._active:
            return
        self._active = False
        hub = runner.message_hub
        for group, params in self._groups.items():
            hub.update_scalar(f'train/grad/{group}',
                              self._grad_sq.get(group, 0.0) ** 0.5)
            moved = sum((p.detach() - b).float().pow(2).sum().item()
                        for p, b in zip(params, self._before[group]))
            size = sum(b.float().pow(2).sum().item()
                       for b in self._before[group])
            hub.update_scalar(f'train/update/{group}',
                              (moved / max(size, 1e-30)) ** 0.5)
        for key, value in self._out_std.items():
            hub.update_scalar(f'train/out_std/{key}', value)
        self._before = {}
