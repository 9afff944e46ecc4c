"""timm models as benchmark baselines (``timm:NAME``), behind the same
calls as an mmpretrain ``ImageClassifier``, so that one training step
times both: timm's Swin and ConvNeXt are the implementations most users
compare against, and their kernels differ from mmpretrain's.

timm is imported only when such a model is built: it is no dependency of
mmsparx.
"""
from __future__ import annotations

import importlib
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

PREFIX = 'timm:'


class TimmMissingError(ImportError):
    """A ``timm:`` model was asked for where timm is not installed."""


def is_timm_name(name: str) -> bool:
    return name.startswith(PREFIX) and len(name) > len(PREFIX)


def timm_model_name(name: str) -> str:
    """``timm:convnext_tiny`` -> ``convnext_tiny``."""
    if not is_timm_name(name):
        raise ValueError(f'{name!r} is not of the form timm:NAME')
    return name[len(PREFIX):]


def import_timm():
    try:
        return importlib.import_module('timm')
    except ImportError as err:
        raise TimmMissingError(
            'timm is not installed here: timm:NAME baselines need it '
            '(pip install timm), or compare with the mmpretrain baselines '
            '(swin-t, convnext-t)') from err


class TimmClassifier(nn.Module):
    """A timm classifier answering ``model(images, samples, mode)`` as
    mmpretrain's does: ``'tensor'`` gives logits, ``'loss'`` the
    cross-entropy on the samples' ``gt_label``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.num_classes = int(model.num_classes)

    def forward(self, images: torch.Tensor, samples: Optional[list] = None,
                mode: str = 'tensor'):
        logits = self.model(images)
        if mode == 'tensor':
            return logits
        if mode != 'loss':
            raise ValueError(f'mode {mode!r}: only tensor and loss')
        labels = torch.cat([s.gt_label for s in samples]).to(logits.device)
        return dict(loss=F.cross_entropy(logits, labels))


def build_timm(name: str, features_only: bool = False,
               **kwargs) -> nn.Module:
    """``timm.create_model`` without weights: a ``TimmClassifier``, or
    with ``features_only`` timm's multi-scale feature extractor."""
    timm = import_timm()
    if features_only:
        kwargs['features_only'] = True
    model = timm.create_model(timm_model_name(name), pretrained=False,
                              **kwargs)
    return model if features_only else TimmClassifier(model)
