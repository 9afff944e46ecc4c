"""Pretrained weights into an mmsparx backbone, whatever their layout."""
from __future__ import annotations

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
    (a bare backbone) are used. Missing output norms are fine (dense models
    add their own); any other missing or mismatched key raises, so a wrong
    checkpoint never loads half-way silently.
    """
    state = state_dict_of(load_checkpoint_file(filename))
    if convert is not None and is_official is not None and is_official(state):
        state = convert(state)
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items()
                 if k.startswith(prefix)}
    report = load_state_dict(backbone, state, strict=False, logger=logger)
    body_missing = [k for k in report.missing
                    if not k.startswith('out_norms.')]
    if body_missing or report.mismatched:
        raise RuntimeError(
            f'{filename} does not fit {type(backbone).__name__}: {report}. '
            'Check the variant (arch) matches the checkpoint.')
    return report
