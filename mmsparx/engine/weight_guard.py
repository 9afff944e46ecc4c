"""What :class:`~mmsparx.engine.hooks.FiniteCheckHook` needs to tell a good
checkpoint from a poisoned one.

A step with finite losses can still break the model: a learning rate far
too high writes weights of 1e4 whose *next* forward is NaN, and the
checkpoint of that step looks fine until it is loaded. So the weights are
checked after every step (:func:`peak_abs`: one fused max-abs per device,
one host sync) and, when training stops, the checkpoint offered for the
resume is the newest one that loads and gives finite losses on the batch
that failed (:func:`last_good_checkpoint`), not merely the newest one.
"""
from __future__ import annotations

import glob
import os.path as osp
from collections import defaultdict
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import torch
from mmengine.model import is_model_wrapper

# runtime_info keys (saved in every checkpoint with the message hub):
# the newest checkpoint whose weights gave finite losses in a forward pass,
# and the file SafeCheckpointHook keeps beyond max_keep_ckpts for that.
VERIFIED_KEY = 'mmsparx_verified_ckpt'
HELD_KEY = 'mmsparx_held_ckpt'
# How many checkpoint files the stop tries before giving up.
MAX_CANDIDATES = 8


def bare_model(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if is_model_wrapper(model) else model


def _peaks(group: List[torch.Tensor]) -> torch.Tensor:
    """max |x| of each tensor of ``group`` (one device), in float32.

    On CUDA the fused inf-norm is one kernel for the whole list. On the CPU
    that kernel is 7-8 times slower than a min / max pass per tensor (0.29
    against 0.035 s for 90M floats on one thread), a cost a B model with
    its AdamW state would pay after every step. Both propagate NaN and inf.
    """
    if group[0].device.type == 'cpu':
        return torch.stack([torch.stack(torch.aminmax(t)).abs().max().float()
                            for t in group])
    return torch.stack([n.float() for n in torch._foreach_norm(
        group, float('inf'))])


def peak_abs(tensors: Iterable[torch.Tensor]) -> float:
    """max |x| over all floating tensors: NaN if any holds a NaN, inf if
    any holds an inf (the max propagates both)."""
    by_device: Dict[torch.device, List[torch.Tensor]] = defaultdict(list)
    for tensor in tensors:
        if tensor.is_floating_point() and tensor.numel():
            by_device[tensor.device].append(tensor.detach())
    peaks = [_peaks(group).max() for group in by_device.values()]
    if not peaks:
        return 0.0
    return float(torch.stack([p.cpu() for p in peaks]).max())


def optimizer_tensors(optim_wrapper) -> List[torch.Tensor]:
    """The optimizer's state tensors (momenta, second moments); ``{}`` for
    an optimizer wrapper dict (one per module) is walked too."""
    wrappers = optim_wrapper.values() if hasattr(optim_wrapper, 'values') \
        and not hasattr(optim_wrapper, 'optimizer') else [optim_wrapper]
    found = []
    for wrapper in wrappers:
        optimizer = getattr(wrapper, 'optimizer', None)
        for state in getattr(optimizer, 'state', {}).values():
            found.extend(v for v in state.values()
                         if isinstance(v, torch.Tensor))
    return found


def worst_parameters(model: torch.nn.Module, limit: int = 3) -> str:
    """The parameters with the largest |w| (non-finite first), for the
    message: 'name (max |w| = ...)'."""
    rows = []
    for name, param in bare_model(model).named_parameters():
        if param.is_floating_point() and param.numel():
            peak = float(param.detach().abs().max())
            rank = float('inf') if peak != peak else peak  # NaN first
            rows.append((rank, name, peak))
    rows.sort(key=lambda row: row[0], reverse=True)
    return ', '.join(f'{name} (max |w| = {peak:.3g})'
                     for _, name, peak in rows[:limit])


def candidates(work_dir: str, last_ckpt: Optional[str]) -> List[str]:
    """Checkpoint files to try, newest first: ``last_checkpoint``'s, then
    the work dir's ``*.pth`` by modification time."""
    named = []
    pointer = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(pointer):
        with open(pointer) as f:
            named.append(f.read().strip())
    if last_ckpt:
        named.append(last_ckpt)
    files = sorted(glob.glob(osp.join(work_dir, '*.pth')),
                   key=osp.getmtime, reverse=True)
    seen, ordered = set(), []
    for path in named + files:
        key = osp.abspath(path)
        if key not in seen and osp.isfile(path):
            seen.add(key)
            ordered.append(path)
    return ordered[:MAX_CANDIDATES]


def forward_losses(model: torch.nn.Module, data_batch) -> Dict[str, float]:
    """Each loss of one forward pass (no gradient, no step) on
    ``data_batch``, as the training step computes them."""
    model = bare_model(model)
    with torch.no_grad():
        data = model.data_preprocessor(data_batch, True)
        losses = model._run_forward(data, mode='loss')
        _, log_vars = model.parse_losses(losses)
    return {k: float(v) for k, v in log_vars.items() if 'loss' in k}


def _load_weights(model: torch.nn.Module, path: str) -> Optional[str]:
    """Load ``path``'s weights into ``model``; None, or why it cannot."""
    from mmsparx.fileio import load_checkpoint_file, state_dict_of
    model = bare_model(model)
    try:
        state = state_dict_of(load_checkpoint_file(path, 'cpu'))
        state = {k[7:] if k.startswith('module.') else k: v
                 for k, v in state.items()}
        result = model.load_state_dict(state, strict=False)
    except Exception as err:  # unreadable, truncated, other shapes
        return f'does not load: {type(err).__name__}: {err}'.split('\n')[0]
    own = len(model.state_dict())
    if len(result.missing_keys) > own // 2:
        return (f'fills only {own - len(result.missing_keys)} of the '
                f"model's {own} tensors")
    return None


def last_good_checkpoint(
        runner, data_batch, agree: Callable[[bool], bool]
) -> Tuple[Optional[str], List[str]]:
    """The newest checkpoint in the work dir that loads into the model and
    gives finite losses on ``data_batch``, and one line per file rejected.

    The model is put back as it was afterwards. ``agree(bad)`` makes every
    rank take the same verdict (a forward may hold collectives).
    """
    model = bare_model(runner.model)
    own = {k: v.detach().to('cpu', copy=True)
           for k, v in model.state_dict().items()}
    rejected: List[str] = []
    found = None
    try:
        for path in candidates(runner.work_dir,
                               runner.message_hub.get_info('last_ckpt')):
            why = _load_weights(model, path)
            if why is None:
                try:
                    losses = forward_losses(model, data_batch)
                except Exception as err:  # a model that cannot do this
                    losses = {}
                    why = f'its forward failed: {type(err).__name__}: {err}'
                bad = [f'{k} = {v}' for k, v in sorted(
                    losses.items(), key=lambda kv: kv[0] == 'loss')
                    if v != v or v in (float('inf'), float('-inf'))]
                if bad:
                    why = 'its forward on this batch gives ' + ', '.join(bad)
                why = why and why.split('\n')[0]
            if not agree(why is not None):
                found = path
                break
            rejected.append(f'{path}: {why or "rejected on another rank"}')
    finally:
        model.load_state_dict(own)
    return found, rejected
