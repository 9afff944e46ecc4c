"""The toolboxes' own Inferencers (mmdet's ``DetInferencer``, mmseg's
``MMSegInferencer``, mmpretrain's ``ImageClassificationInferencer``) for
an mmsparx config, with what they cannot know filled in.

They read class names only from the checkpoint's ``meta``: a
``tools/train.py`` checkpoint carries them, but a converted authors' file
or a bare state dict does not, and then they fall back to COCO /
Cityscapes / ImageNet names whatever the model (mmseg's pictures even use
Cityscapes' 19 colours unless told otherwise, and fail on a 150-class
map). They also load weights non-strictly. :func:`toolbox_inferencer`
loads the weights whole through :func:`mmsparx.apis.model.load_checkpoint`
and gives the Inferencer the names :func:`load_predictor` would use."""
from __future__ import annotations

import warnings
from typing import Optional

from mmsparx.apis.inference import (NO_WEIGHTS, class_names, dataset_meta,
                                    require_config, task_of)
from mmsparx.apis.model import load_checkpoint
from mmsparx.visualization.drawing import rgb_palette


def _config(config: str, cfg_options: Optional[dict]):
    from mmengine.config import Config
    require_config(config)
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def _unloaded(task: str, cfg, device: Optional[str]):
    """The task's Inferencer with no weights loaded (its warnings that
    the weights are random are true only until :func:`toolbox_inferencer`
    loads them, so they are not shown)."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        if task == 'detection':
            from mmdet.apis import DetInferencer
            return DetInferencer(model=cfg, weights=None, device=device,
                                 show_progress=False)
        if task == 'segmentation':
            from mmseg.apis import MMSegInferencer
            return MMSegInferencer(model=cfg, weights=None, device=device)
        from mmpretrain.apis import ImageClassificationInferencer
        return ImageClassificationInferencer(model=cfg, pretrained=None,
                                             device=device)


def toolbox_inferencer(config: str, weights: Optional[str] = None,
                       device: Optional[str] = None,
                       cfg_options: Optional[dict] = None):
    """The toolbox's Inferencer for ``config`` (``cfg_options`` merged)
    with ``weights`` loaded whole (None or ``'none'``: initial weights)
    and the class names of the checkpoint, else of the config's dataset,
    in its model and its visualizer. Sets the config's default scope.

    Raises:
        InferenceError: no such config, or not a toolbox config.
        FileNotFoundError, CheckpointError: the weights are missing,
            unreadable or do not fill the model.
    """
    from mmengine.registry import init_default_scope
    cfg = _config(config, cfg_options)
    task = task_of(cfg, config)
    # mmpretrain's Inferencer builds its pipeline in the current default
    # scope: another toolbox's, set earlier in the process, has none of
    # its transforms.
    init_default_scope(cfg.default_scope)
    inferencer = _unloaded(task, cfg, device)
    model = inferencer.model
    meta = {} if weights in (None, NO_WEIGHTS) else load_checkpoint(
        model, weights, config)
    names, palette, _ = class_names(model, task, *dataset_meta(cfg, meta))
    palette = rgb_palette(len(names), palette)
    if task == 'classification':
        inferencer.classes = list(names)
        model._dataset_meta = dict(classes=list(names))
        return inferencer
    model.dataset_meta = dict(classes=list(names), palette=palette)
    if task == 'segmentation':
        inferencer.visualizer.set_dataset_meta(list(names), palette)
    else:
        inferencer.visualizer.dataset_meta = model.dataset_meta
    return inferencer
