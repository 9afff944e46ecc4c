"""Pretrained weights into an mmsparx backbone, whatever their layout."""
from __future__ import annotations

import logging
from typing import Callable, Dict, Optional

from torch import Tensor, nn

from mmsparx.checkpoint import (LoadReport, load_checkpoint_file,
                                load_state_dict, state_dict_of)


def load_backbone(backbone: nn.Module, filename: str,
                  convert: Optional[Callable[[Dict[str, Tensor]],
                                             Dict[str, Tensor]]] = None,
                  is_official: Optional[Callable] = None,
                  prefix: str = 'backbone.', logger='current') -> LoadReport:
    """Load ``filename`` into ``backbone`` and report every key.

    An authors'-layout file is converted first. Keys under ``prefix`` (a
    full classifier/detector checkpoint) or, if there are none, all keys
    (a bare backbone) are used; the others (a classifier's head, a
    detector's neck) are reported as unused. Keys the backbone says may be
    missing (``may_be_missing``: output norms, ...) are fine; any other
    missing or mismatched key raises, and so does what the backbone's
    ``check_checkpoint`` refuses, so a wrong checkpoint never loads half-way
    silently.
    """
    state = state_dict_of(load_checkpoint_file(filename))
    if convert is not None and is_official is not None and is_official(state):
        state = convert(state)
    unused = []
    if any(k.startswith(prefix) for k in state):
        unused = sorted(k for k in state if not k.startswith(prefix))
        state = {k[len(prefix):]: v for k, v in state.items()
                 if k.startswith(prefix)}
    check = getattr(backbone, 'check_checkpoint', None)
    if check is not None:
        check(state)
    may_be_missing = getattr(backbone, 'may_be_missing',
                             lambda key: key.startswith('out_norms.'))
    report = load_state_dict(backbone, state, strict=False, logger=logger)
    if unused:
        from mmengine.logging import print_log
        print_log(f'{type(backbone).__name__}: {len(unused)} keys of '
                  f'{filename} outside {prefix!r} not used by the backbone: '
                  + ', '.join(unused), logger=logger, level=logging.INFO)
    body_missing = [k for k in report.missing if not may_be_missing(k)]
    if body_missing or report.mismatched:
        raise RuntimeError(
            f'{filename} does not fit {type(backbone).__name__}: {report}. '
            'Check the variant (arch) matches the checkpoint.')
    report.unused = unused
    return report
