"""Fitting a state dict to a model: what each key would meet (missing,
unexpected, another shape), found before anything is copied, and a copy
that reports every key's fate instead of failing half-way."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

# Lists longer than this are cut in ``str(LoadReport)`` and in messages.
REPORT_LIST_LIMIT = 10


class CheckpointError(ValueError, RuntimeError):
    """A checkpoint that cannot be used as asked; the message is one
    paragraph naming the problem and the fix. A ValueError (bad input) and
    a RuntimeError (what the loaders raised before), so callers of either
    kind keep working."""


def _capped(items: Sequence[str], limit: Optional[int], note: str) -> str:
    if limit is None or len(items) <= limit:
        return ', '.join(items)
    return (', '.join(items[:limit])
            + f' ... and {len(items) - limit} more{note}')


@dataclass
class LoadReport:
    """What :func:`load_state_dict` did with each key."""
    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[Tuple[str, tuple, tuple]] = field(default_factory=list)
    # Keys of the file outside the part that was loaded (a classifier's
    # head under a backbone): reported, not an error.
    unused: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def _lists(self) -> List[Tuple[str, List[str]]]:
        """(title, entries) of every non-empty list but ``loaded``."""
        lists = [
            (f'missing in checkpoint ({len(self.missing)})', self.missing),
            (f'unexpected in checkpoint ({len(self.unexpected)})',
             self.unexpected),
            (f'shape mismatch, checkpoint vs model ({len(self.mismatched)})',
             [f'{k} {tuple(a)} vs {tuple(b)}'
              for k, a, b in self.mismatched]),
            (f'not used ({len(self.unused)})', self.unused)]
        return [(title, entries) for title, entries in lists if entries]

    def summary(self, limit: Optional[int] = REPORT_LIST_LIMIT,
                note: str = '') -> str:
        """One line; each list cut after ``limit`` entries (``None``: all)
        with ``note`` after the count of the rest, since a whole model's
        key list makes an unreadable 40,000-character message."""
        lines = [f'loaded {len(self.loaded)} keys']
        lines += [f'{title}: {_capped(entries, limit, note)}'
                  for title, entries in self._lists()]
        return '; '.join(lines)

    def __str__(self) -> str:
        return self.summary()


def _log_full_lists(report: LoadReport, name: str, logger, level: int) -> bool:
    """Log every list the summary cut; whether there was one."""
    from mmengine.logging import print_log
    cut = [(title, entries) for title, entries in report._lists()
           if len(entries) > REPORT_LIST_LIMIT]
    for title, entries in cut:
        print_log(f'{name}: {title}: {", ".join(entries)}', logger=logger,
                  level=level)
    return bool(cut)


def fit_problems(module: nn.Module, state: Mapping[str, torch.Tensor],
                 may_be_missing: Callable[[str], bool] = lambda key: False
                 ) -> LoadReport:
    """What loading ``state`` into ``module`` would meet, found without
    copying anything: missing keys (other than ``may_be_missing``),
    unexpected keys, keys of another shape."""
    own = module.state_dict()
    return LoadReport(
        missing=[k for k in own if k not in state and not may_be_missing(k)],
        unexpected=[k for k in state if k not in own],
        mismatched=[(k, tuple(v.shape), tuple(own[k].shape))
                    for k, v in state.items()
                    if k in own and tuple(v.shape) != tuple(own[k].shape)])


def adapt_keys(module: nn.Module, state: Mapping[str, torch.Tensor]
               ) -> Dict[str, torch.Tensor]:
    """``state`` with the keys renamed that submodules read in another
    layout (``adapt_loaded_keys``: the SparX-Mamba backbone reads its
    authors' keys), so the checks before copying see what torch's own
    load (which runs their pre-hooks) would see."""
    state = dict(state)
    for name, sub in module.named_modules():
        adapt = getattr(sub, 'adapt_loaded_keys', None)
        if callable(adapt):
            adapt(state, f'{name}.' if name else '')
    return state


def load_state_dict(module: nn.Module, state_dict: Mapping[str, torch.Tensor],
                    strict: bool = False, logger=None) -> LoadReport:
    """Copy ``state_dict`` into ``module`` and report every key's fate.

    Keys with a wrong shape are skipped (not a crash halfway through the
    copy). With ``strict=True`` any missing, unexpected or mismatched key
    raises before anything is copied. With a ``logger`` the report is logged
    and so are the full key lists its summary cuts. Keys in a layout a
    submodule reads (:func:`adapt_keys`) are renamed first.
    """
    state_dict = adapt_keys(module, state_dict)
    report = fit_problems(module, state_dict)
    unusable = set(report.unexpected) | {k for k, _, _ in report.mismatched}
    usable = {k: v for k, v in state_dict.items() if k not in unusable}
    name = type(module).__name__
    if strict and not report.ok:
        note = ' (pass logger= to log the full list)'
        if logger is not None and _log_full_lists(report, name, logger,
                                                  logging.ERROR):
            note = ' (full list in the log)'
        raise RuntimeError(f'strict load into {name} failed: '
                           f'{report.summary(note=note)}')
    module.load_state_dict(usable, strict=False)
    report.loaded = sorted(usable)
    if logger is not None:
        from mmengine.logging import print_log
        level = logging.INFO if report.ok else logging.WARNING
        print_log(f'{name}: {report.summary(note=" (full list in the log)")}',
                  logger=logger, level=level)
        _log_full_lists(report, name, logger, level)
    return report
