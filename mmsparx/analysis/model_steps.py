"""The models the benchmark tools compare and the steps they time: a
classifier or dense backbone by name (mmsparx's variants or ``timm:NAME``),
random labelled batches, and one training step for every model, so that
throughput and kernel counts compare like with like."""
from __future__ import annotations

import argparse
from typing import Optional, Sequence, Tuple

import torch
from torch import nn

from mmsparx.analysis.timm_baseline import build_timm, is_timm_name
from mmsparx.models.variants import (BASELINES, VARIANTS, build_classifier,
                                     model_names)

# One optimizer for every model, so that the step costs compare: the
# settings of mmpretrain's imagenet_bs1024_adamw_swin schedule, which the
# SparX and SpaRTAN ImageNet configs inherit, and their max-norm 5 clipping.
ADAMW = dict(lr=1e-3, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999))
CLIP_MAX_NORM = 5.0
DTYPES = {'float16': torch.float16, 'bfloat16': torch.bfloat16}
# Backbone settings for dense runs (four scales), as the detection configs
# set them; mmpretrain's ConvNeXt would otherwise pool its last map.
DENSE_BACKBONE = {
    'SparXMamba': dict(out_norm='ln', dmca_scale='learned'),
    'SparXSwin': dict(out_norm='ln'),
    'ConvNeXt': dict(gap_before_final_norm=False),
}


def model_name(value: str) -> str:
    """argparse type: a variants name or ``timm:NAME``."""
    if value in model_names() or is_timm_name(value):
        return value
    raise argparse.ArgumentTypeError(
        f'unknown model {value!r}: one of {model_names()} or timm:NAME')


def amp_dtype(device: torch.device,
              requested: Optional[str] = None) -> torch.dtype:
    """``requested`` (float16 / bfloat16), else float16 where a GradScaler
    can guard it (CUDA) and bfloat16 on CPU, whose range needs no
    scaling."""
    if requested is not None:
        return DTYPES[requested]
    return torch.float16 if device.type == 'cuda' else torch.bfloat16


def build_model(name: str) -> nn.Module:
    """A classifier answering ``model(images, samples, mode)``."""
    return build_timm(name) if is_timm_name(name) else build_classifier(name)


def build_dense_backbone(name: str) -> nn.Module:
    """The backbone of ``name`` returning its four feature maps. The
    mmsparx backbones are registered already: importing any mmsparx module
    runs the package's ``__init__``, which registers them."""
    if is_timm_name(name):
        return build_timm(name, features_only=True)
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    cfg = dict(dict(VARIANTS, **BASELINES)[name]['backbone'],
               out_indices=(0, 1, 2, 3))
    cfg.update(DENSE_BACKBONE.get(cfg['type'], {}))
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return MODELS.build(cfg)


def num_classes(model: nn.Module) -> int:
    found = getattr(model, 'num_classes', None)
    return int(found) if found is not None else model.head.num_classes


def random_batch(model: nn.Module, batch: int, size: Sequence[int],
                 device: torch.device, seed: int = 0
                 ) -> Tuple[torch.Tensor, list]:
    """Random images and labels, as mmpretrain's data path hands them to
    ``ImageClassifier.forward(..., mode='loss')``; the labels index the
    model's own head (1000 or sparseswin's 100 classes)."""
    from mmpretrain.structures import DataSample
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, *size, generator=generator).to(device)
    labels = torch.randint(num_classes(model), (batch, ),
                           generator=generator)
    samples = [DataSample().set_gt_label(int(label)).to(device)
               for label in labels]
    return images, samples


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    """AdamW as in the ImageNet recipes (no per-parameter decay groups:
    they change no step's cost)."""
    return torch.optim.AdamW(model.parameters(), **ADAMW)


def loss_of(model: nn.Module, images: torch.Tensor, samples: list,
            amp: bool, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """The summed losses of one (autocast) forward."""
    dtype = dtype or amp_dtype(images.device)
    with torch.autocast(images.device.type, dtype=dtype, enabled=amp):
        losses = model(images, samples, mode='loss')
        return sum(value for key, value in losses.items() if 'loss' in key)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer,
               images: torch.Tensor, samples: list, amp: bool,
               scaler: Optional['torch.amp.GradScaler'] = None,
               dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """One training iteration as mmengine's AmpOptimWrapper runs it:
    autocast forward and loss, (scaled) backward, unscale, clip, step.
    Returns the detached loss (no sync: the caller times the step)."""
    optimizer.zero_grad(set_to_none=True)
    loss = loss_of(model, images, samples, amp, dtype)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), CLIP_MAX_NORM)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return loss.detach()


def dense_loss(backbone: nn.Module, images: torch.Tensor, amp: bool,
               dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """Sum of the means of the backbone's maps: every scale gets a
    gradient, as a neck on top would give it."""
    dtype = dtype or amp_dtype(images.device)
    with torch.autocast(images.device.type, dtype=dtype, enabled=amp):
        maps = backbone(images)
        return sum(m.float().mean() for m in maps)


def compile_features(model: nn.Module) -> None:
    """``torch.compile`` in place (state-dict keys unchanged) on what
    computes the features: the backbone of an mmpretrain classifier, timm's
    network, or a dense backbone itself."""
    for name in ('backbone', 'model'):
        inner = getattr(model, name, None)
        if isinstance(inner, nn.Module):
            inner.compile()
            return
    model.compile()
