"""A model from a config, as the tools see it (the toolbox's default scope
set, the model built through that toolbox's registry), and its weights
loaded whole or refused."""
from __future__ import annotations

import copy
import os.path as osp
from typing import Optional, Tuple

from torch import nn

from mmsparx.converters.loading import authors_classifier_state
from mmsparx.fileio import (CheckpointError, load_checkpoint_file,
                            load_state_dict, local_copy, state_dict_of)

SCOPES = ('mmdet', 'mmseg', 'mmpretrain')
# Detector type -> the input and FLOP unit its paper counts with.
CONVENTIONS = {'RTDETR': dict(input=(640, 640), flops_per_mac=2)}


def model_config(cfg):
    """``cfg.model`` as mmengine's Runner builds it: the config's top-level
    ``data_preprocessor`` (where mmpretrain and mmseg configs keep it)
    merged in unless the model names its own. Without the merge a
    classifier normalises with mean 0 / std 1, not as it was trained."""
    model_cfg = copy.deepcopy(cfg.model)
    preprocessor = cfg.get('data_preprocessor')
    if preprocessor is not None:
        model_cfg.setdefault('data_preprocessor',
                             copy.deepcopy(preprocessor))
    return model_cfg


def build_model(cfg, pretrained: bool = True) -> nn.Module:
    """The model of ``cfg`` as the Runner builds it (:func:`model_config`,
    the config's default scope set). ``pretrained=False`` drops the
    backbone's ``init_cfg``: a file named there need not exist."""
    from mmengine.registry import MODELS, init_default_scope
    scope = cfg.get('default_scope')
    if scope not in SCOPES:
        raise ValueError(f'default_scope {scope!r} is not one of mmdet / '
                         'mmseg / mmpretrain: mmsparx builds those '
                         "toolboxes' models")
    init_default_scope(scope)
    model_cfg = model_config(cfg)
    if not pretrained:
        model_cfg.pop('pretrained', None)
        if model_cfg.get('backbone') is not None:
            model_cfg.backbone.init_cfg = None
            model_cfg.backbone.pop('pretrained', None)
    return MODELS.build(model_cfg)


def load_model(config: str, cfg_options: Optional[dict] = None
               ) -> Tuple[nn.Module, str, object]:
    """(model in eval mode, its default scope, the config with
    ``cfg_options`` merged), built as :func:`build_model` does with no
    weights loaded: a pretrained file named in the config need not
    exist."""
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    try:
        model = build_model(cfg, pretrained=False)
    except ValueError as err:
        if 'default_scope' not in str(err):
            raise
        raise ValueError(f'{config}: {err}') from None
    return model.eval(), cfg.default_scope, cfg


def classifier_input(cfg) -> Tuple[int, int]:
    """The test pipeline's final crop (or resize) of a classifier config."""
    size = None
    for step in cfg.test_dataloader.dataset.pipeline:
        value = step.get('crop_size') or (
            step.get('scale') if step['type'] == 'Resize' else None)
        if value is not None:
            size = value
    if size is None:
        raise ValueError('no crop or resize in the test pipeline: give the '
                         'input size (--input H W)')
    return (size, size) if isinstance(size, int) else (size[1], size[0])


def load_checkpoint(model: nn.Module, checkpoint: str, config: str) -> dict:
    """Every key of ``model`` (built from ``config``) from ``checkpoint``,
    or a refusal before anything is copied: an evaluated or exported model
    that is half random would give numbers without a word of warning.
    Returns the file's ``meta`` ({} if none): a trained model's class
    names are there (``dataset_meta``).

    ``checkpoint`` may be an http(s) URL: its cached copy is read,
    downloaded first if need be.

    Raises:
        FileNotFoundError: ``checkpoint`` does not exist.
        CheckpointError: it cannot be read or downloaded, or does not fill
            the model.
    """
    checkpoint = local_copy(checkpoint)
    if not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint {checkpoint} does not exist.')
    try:
        loaded = load_checkpoint_file(checkpoint)
        state = authors_classifier_state(model, state_dict_of(loaded))
    except (TypeError, RuntimeError) as err:
        raise CheckpointError(f'{checkpoint}: {err}') from err
    try:
        # An authors' ImageNet file is converted above, and the strict
        # load renames the keys of their dense files (adapt_keys) before
        # checking, as load_from does.
        load_state_dict(model, state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(
            f'{checkpoint} does not fit the model of {config}: {err}. Give '
            f'the whole trained model of this config: a checkpoint '
            f'tools/train.py wrote for it, or the converter output for an '
            f"authors' file (tools/model_converters/); an ImageNet backbone "
            f'file is for init_cfg.') from err
    meta = loaded.get('meta') if isinstance(loaded, dict) else None
    return dict(meta) if isinstance(meta, dict) else {}
