"""Backbones for the ERF tool, each made to return the NCHW map of every
stage asked for: by name (mmsparx's variants and mmpretrain's baselines),
by registry type (``SparXMamba:small``) or from a config file, with random
weights or a checkpoint read by the pretrained loader."""
from __future__ import annotations

import copy
import os.path as osp
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from torch import nn

from mmsparx.analysis.erf import ERFInputError
from mmsparx.apis import build_model, model_config
from mmsparx.converters.detect import detect_checkpoint
from mmsparx.converters.loading import (load_backbone, read_state_dict,
                                        split_prefix)
from mmsparx.fileio import CheckpointError, fit_problems
from mmsparx.models.variants import BASELINES, VARIANTS

# mmpretrain's baselines with four stages at strides 4-32 (MobileNetV2's
# out_indices count its seven blocks, not stages).
ERF_BASELINES = ('swin-t', 'convnext-t', 'resnet-18')
STAGES = (0, 1, 2, 3)
# What each backbone type needs to hand back stage maps: SparseSwin's
# classifier ends in position-free tokens, so its dense form is measured
# (its stride 4-16 maps are the classifier's Swin stages, with a LayerNorm;
# its stride-32 map is the SparTa tokens put back in space); ConvNeXt pools
# before its norm unless told; Swin refuses maps under its window size.
TYPE_SETTINGS: Dict[str, dict] = {
    'SparseSwin': dict(set=dict(type='SparseSwinDense'),
                       drop=('out_type', 'resample_tokens')),
    'ConvNeXt': dict(set=dict(gap_before_final_norm=False)),
    'SwinTransformer': dict(set=dict(pad_small_map=True)),
}
# mmpretrain's ImageNet normalisation (RGB, 0-255 pixels).
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


@dataclass
class ERFBackbone:
    """A backbone ready to measure: its outputs are the maps of
    ``stages``, in that order; ``init`` says where its weights came from."""
    module: nn.Module
    name: str
    stages: Tuple[int, ...]
    init: str
    mean: Tuple[float, ...] = IMAGENET_MEAN
    std: Tuple[float, ...] = IMAGENET_STD


def named_backbones() -> Dict[str, dict]:
    """name -> backbone config of every backbone known by name."""
    table = {name: entry['backbone'] for name, entry in VARIANTS.items()}
    table.update({name: BASELINES[name]['backbone']
                  for name in ERF_BASELINES})
    return table


def known_names() -> List[str]:
    return sorted(named_backbones())


def unknown_backbone(spec: str) -> str:
    """The refusal of a name that is neither known, a config file nor a
    registered type."""
    return (f'unknown backbone {spec!r}. Known names: '
            f'{", ".join(known_names())}. A backbone can also be given as a '
            'config file (its model.backbone is measured) or as a registered '
            'backbone type with an optional arch, e.g. SparXMamba:small or '
            'SwinTransformer:tiny.')


def display_name(spec: str) -> str:
    """How ``spec`` is named in tables and figures: a config by its file
    name, anything else as given."""
    return osp.splitext(osp.basename(spec))[0] if spec.endswith('.py') \
        else spec


def _check_stages(stages: Sequence[int]) -> Tuple[int, ...]:
    if not stages or any(s not in STAGES for s in stages):
        raise ERFInputError(f'stages must be among {STAGES} (strides 4, 8, '
                            f'16, 32), got {list(stages)}')
    return tuple(sorted(set(stages)))


def stage_config(backbone: dict, stages: Sequence[int]) -> dict:
    """``backbone`` returning the maps of ``stages`` (out_indices, and the
    settings of :data:`TYPE_SETTINGS`); the caller's dict is not changed."""
    cfg = copy.deepcopy(dict(backbone))
    settings = TYPE_SETTINGS.get(str(cfg['type']).split('.')[-1], {})
    for key in settings.get('drop', ()):
        cfg.pop(key, None)
    cfg.update(settings.get('set', {}))
    cfg['out_indices'] = tuple(stages)
    return cfg


def _registered_type(spec: str) -> Optional[dict]:
    """``Type`` or ``Type:arch`` as a backbone config, if ``Type`` is in
    mmpretrain's model registry (where mmsparx registers its own)."""
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    name, _, arch = spec.partition(':')
    if not name.isidentifier():
        return None
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        if MODELS.get(name) is None:
            return None
    return dict(type=name, arch=arch) if arch else dict(type=name)


def is_output_norm(key: str) -> bool:
    """A per-stage output norm of mmpretrain's Swin / ConvNeXt (``norm0.``
    ...): a classifier's file holds the last one only."""
    return re.match(r'norm\d+\.', key) is not None


def check_fits(module: nn.Module, checkpoint: str) -> Tuple[str, List[str]]:
    """(the prefix under which ``checkpoint`` fills ``module``: 'backbone.'
    for a classifier's file, '' for a bare backbone; the output norms it
    lacks), for backbones read by mmengine's loader, which would load a
    partial file without a word.

    Raises:
        CheckpointError: another key of the backbone is missing or of
            another shape.
    """
    state = read_state_dict(checkpoint)
    part, _ = split_prefix(state, 'backbone.')
    problems = fit_problems(module, part, is_output_norm)
    if problems.missing or problems.mismatched:
        info = detect_checkpoint(state)
        held = info.family or 'an unknown model'
        first = (problems.missing or [k for k, *_ in problems.mismatched])[0]
        raise CheckpointError(
            f'checkpoint {checkpoint} does not fit {type(module).__name__} '
            f'({held} by its keys): {len(problems.missing)} keys missing, '
            f'{len(problems.mismatched)} of another shape (first: {first}). '
            'Give a checkpoint of this backbone and arch, bare or a '
            "classifier's (its backbone.* keys are read).")
    lacking = [k for k in module.state_dict() if k not in part]
    return ('' if part is state else 'backbone.'), lacking


def _build(cfg: dict):
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return MODELS.build(cfg)


def uses_own_loader(module: nn.Module) -> bool:
    """Whether ``module`` reads pretrained files through mmsparx's
    :func:`load_backbone` (any layout, misfits refused)."""
    return hasattr(module, 'checkpoint_format') or hasattr(
        module, 'prepare_pretrained')


def _load(module: nn.Module, checkpoint: Optional[str]) -> str:
    """Random weights (the backbone's ``init_weights``), then those of
    ``checkpoint``; returns where they came from, for titles."""
    if checkpoint is None:
        module.init_weights()
        return 'random init'
    if not osp.isfile(checkpoint):
        raise ERFInputError(f'checkpoint {checkpoint} does not exist: give '
                            "an existing file, or 'none' for random "
                            'weights.')
    if uses_own_loader(module):
        # What init_cfg=dict(type='Pretrained') runs, called here for its
        # report of the keys the file left at their initialisation.
        module.init_weights()
        lacking = load_backbone(module, checkpoint).missing
    else:
        prefix, lacking = check_fits(module, checkpoint)
        module.init_cfg = dict(type='Pretrained', checkpoint=checkpoint,
                               prefix=prefix or None)
        module.init_weights()
    source = f'checkpoint {osp.basename(checkpoint)}'
    if lacking:
        source += f' ({len(lacking)} tensors not in it, at init)'
    return source


def _from_config(path: str, stages: Tuple[int, ...],
                 checkpoint: Optional[str]) -> ERFBackbone:
    from mmengine.config import Config
    cfg = Config.fromfile(path)
    if cfg.model.get('backbone') is None:
        raise ERFInputError(f'{path}: the model has no backbone to measure; '
                            'give a classifier, detector or segmentor '
                            'config.')
    cfg.model.backbone = stage_config(cfg.model.backbone, stages)
    module = build_model(cfg, pretrained=False).backbone
    preprocessor = model_config(cfg).get('data_preprocessor') or {}
    return ERFBackbone(module, display_name(path), stages,
                       _load(module, checkpoint),
                       tuple(preprocessor.get('mean', IMAGENET_MEAN)),
                       tuple(preprocessor.get('std', IMAGENET_STD)))


def build_erf_backbone(spec: str, stages: Sequence[int] = (3, ),
                       checkpoint: Optional[str] = None) -> ERFBackbone:
    """The backbone ``spec`` names, returning the maps of ``stages``, in
    eval mode, its weights random or read from ``checkpoint``.

    Args:
        spec: a name of :func:`known_names`, a config file (``.py``) or a
            registered type with an optional arch (``SparXMamba:small``).
        stages: among 0-3.
        checkpoint: a file ``init_cfg=dict(type='Pretrained')`` reads (a
            bare backbone or a whole model), or None.

    Raises:
        ERFInputError: an unknown ``spec``, stage or missing file.
        CheckpointError: the file does not fit the backbone.
    """
    stages = _check_stages(stages)
    if spec.endswith('.py'):
        if not osp.isfile(spec):
            raise ERFInputError(f'config {spec} does not exist; '
                                + unknown_backbone(spec))
        built = _from_config(spec, stages, checkpoint)
    else:
        table = named_backbones()
        cfg = table.get(spec) or _registered_type(spec)
        if cfg is None:
            raise ERFInputError(unknown_backbone(spec))
        try:
            module = _build(stage_config(cfg, stages))
        except (KeyError, AssertionError, ValueError) as err:
            raise ERFInputError(
                f'{spec} could not be built ({type(err).__name__}: {err}); '
                'check the arch against the names the class accepts.'
            ) from err
        built = ERFBackbone(module, spec, stages, _load(module, checkpoint))
    built.module.eval()
    return built
