"""One image through a model of any of the three toolboxes, as the tools
build it: the task read off the config, the model built and loaded whole
(:mod:`mmsparx.apis.model`), the config's test pipeline run on the file,
the class names the model was trained with."""
from __future__ import annotations

import copy
import logging
import os.path as osp
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from mmsparx.apis.model import load_checkpoint, load_model
from mmsparx.fileio import is_url
from mmsparx.utils.cli import explain_build_error
from mmsparx.visualization.predictions import class_name

TASKS = {'mmdet': 'detection', 'mmseg': 'segmentation',
         'mmpretrain': 'classification'}
# Where each task's model keeps its class count (the first that exists).
NUM_CLASSES_AT = {
    'detection': ('roi_head.bbox_head.num_classes', 'bbox_head.num_classes'),
    'segmentation': ('decode_head.num_classes', ),
    'classification': ('head.num_classes', ),
}
NO_WEIGHTS = 'none'  # the checkpoint argument for initial (random) weights


class InferenceError(ValueError):
    """A refused input (config, image, weights): one paragraph naming the
    problem and the fix."""


@dataclass
class Predictor:
    """A model ready for single images and what its pictures need."""

    model: nn.Module
    cfg: object  # mmengine Config, cfg_options merged
    config: str
    task: str
    pipeline: Callable[[dict], dict]
    classes: Tuple[str, ...]
    palette: Optional[list]
    names_from: str  # where the class names came from, for the user
    weights: Optional[str]  # None: the random weights it is built with


def task_of(cfg, config: str = 'the config') -> str:
    """'detection', 'segmentation' or 'classification': the toolbox whose
    registry builds the model (a scoped type such as ``mmdet.MaskRCNN``,
    else the config's ``default_scope``)."""
    model_type = str(cfg.get('model', {}).get('type', ''))
    scope = model_type.split('.', 1)[0] if '.' in model_type else \
        cfg.get('default_scope')
    if scope not in TASKS:
        raise InferenceError(
            f"{config} is not an mmdet, mmseg or mmpretrain model config "
            f"(its model is built in scope {scope!r}). Give a config with "
            f"default_scope = 'mmdet', 'mmseg' or 'mmpretrain', e.g. one "
            f"under configs/.")
    return TASKS[scope]


def test_steps(cfg) -> List[dict]:
    """The config's test pipeline for an image without annotations: its
    ``LoadAnnotations`` steps dropped (as the toolboxes' Inferencers do)."""
    dataset = cfg.get('test_dataloader', {}).get('dataset', {})
    steps = dataset.get('pipeline') or cfg.get('test_pipeline')
    if not steps:
        raise InferenceError(
            'the config has no test pipeline (test_dataloader.dataset.'
            'pipeline or test_pipeline): add the steps that load, resize '
            'and pack a test image.')
    return [copy.deepcopy(step) for step in steps
            if not str(step.get('type', '')).endswith('LoadAnnotations')]


def model_num_classes(model: nn.Module, task: str) -> Optional[int]:
    """The model's class count, or None where it keeps it elsewhere."""
    for path in NUM_CLASSES_AT[task]:
        value = model
        for name in path.split('.'):
            value = getattr(value, name, None)
        if isinstance(value, int):
            return value
    return None


def dataset_meta(cfg, checkpoint_meta: dict) -> Tuple[dict, str]:
    """(``{'classes', 'palette'}``, where from): the checkpoint's
    ``dataset_meta`` (tools/train.py writes it), else the test dataset's
    ``metainfo`` in the config, else its dataset class's ``METAINFO``;
    ``({}, ...)`` when none names classes."""
    meta = checkpoint_meta.get('dataset_meta') or {}
    if meta.get('classes'):
        return dict(meta), 'the checkpoint'
    if checkpoint_meta.get('CLASSES'):  # files of the 0.x toolboxes
        return dict(classes=checkpoint_meta['CLASSES'],
                    palette=checkpoint_meta.get('PALETTE')), 'the checkpoint'
    dataset = cfg.get('test_dataloader', {}).get('dataset', {})
    metainfo = dataset.get('metainfo') or {}
    if metainfo.get('classes'):
        return dict(metainfo), "the config's test dataset"
    from mmengine.registry import DATASETS
    # The default scope's registry (the root's get() would not look there).
    with DATASETS.switch_scope_and_registry(None) as registry:
        try:
            dataset_class = registry.get(str(dataset.get('type', '')))
        except KeyError:  # a scope prefix no registry knows
            dataset_class = None
    info = getattr(dataset_class, 'METAINFO', None) or {}
    if info.get('classes'):
        return dict(info), f"the config's dataset {dataset_class.__name__}"
    return {}, 'nowhere'


def class_names(model: nn.Module, task: str, meta: dict,
                source: str) -> Tuple[Tuple[str, ...], Optional[list], str]:
    """(names, palette, source) that fit the model: numbered names where
    the found ones are missing or of another count (say, a config whose
    dataset is not the one the checkpoint was trained on)."""
    count = model_num_classes(model, task)
    names = tuple(str(c) for c in meta.get('classes') or ())
    if names and (count is None or len(names) == count):
        return names, meta.get('palette'), source
    from mmengine.logging import print_log
    if names:
        print_log(f'the {len(names)} class names from {source} do not fit '
                  f'the model\'s {count} classes; classes are numbered',
                  logger='current', level=logging.WARNING)
    return tuple(f'class {i}' for i in range(count or 0)), None, \
        'numbers (no names fit the model)'


def require_config(config: str) -> None:
    """Refuse a config path that names no file, saying what to give."""
    if not osp.isfile(config):
        raise InferenceError(f'config {config} does not exist: give the '
                             f'path of a config file, e.g. one under '
                             f'configs/.')


def load_predictor(config: str, checkpoint: Optional[str] = None,
                   cfg_options: Optional[dict] = None,
                   device: str = 'cpu') -> Predictor:
    """The model of ``config`` with ``checkpoint`` loaded whole (None or
    ``'none'``: the random weights it is built with, a smoke run; a URL
    is downloaded once into the cache), on
    ``device``, with its test pipeline. Sets the config's default scope.

    Raises:
        InferenceError: no such config or checkpoint, not a toolbox
            config, no test pipeline, or a device that is not there.
        CheckpointError: the checkpoint is unreadable or does not fill
            the model (:func:`mmsparx.apis.model.load_checkpoint`).
    """
    from mmengine.dataset import Compose
    require_config(config)
    weights = None if checkpoint in (None, NO_WEIGHTS) else checkpoint
    if weights is not None and not is_url(weights) and \
            not osp.isfile(weights):
        raise InferenceError(
            f'checkpoint {weights} does not exist: give the trained model '
            f'of this config (a checkpoint tools/train.py wrote, or a '
            f"converted authors' file), or '{NO_WEIGHTS}' for random "
            f'weights.')
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise InferenceError(f'--device {device}: this machine has no '
                             f'CUDA device; use --device cpu.')
    try:
        model, _, cfg = load_model(config, cfg_options)
    except ValueError as err:
        fix = (" Give a config with default_scope = 'mmdet', 'mmseg' or "
               "'mmpretrain', e.g. one under configs/."
               if 'default_scope' in str(err) else '')
        raise InferenceError(f'{err}.{fix}') from err
    except KeyError as err:  # a type no imported package registers
        hint = explain_build_error(err, config)
        if hint is None:
            raise
        raise InferenceError(hint) from err
    task = task_of(cfg, config)
    meta = load_checkpoint(model, weights, config) if weights else {}
    names, palette, source = class_names(model, task,
                                         *dataset_meta(cfg, meta))
    model.dataset_meta = dict(classes=names, palette=palette)
    pipeline = Compose(test_steps(cfg))
    return Predictor(model.to(device).eval(), cfg, config, task, pipeline,
                     names, palette, source, weights)


def check_image(image: str) -> None:
    """Refuse a missing, empty or undecodable image file (OpenCV's own
    error names neither the file nor the problem)."""
    from mmsparx.datasets.images import image_problem
    problem = image_problem(image, full=True)
    if problem is not None:
        raise InferenceError(f'image {image} is {problem}: give an image '
                             f'file (PNG, JPEG, ...) that exists and '
                             f'opens.')


def predict(predictor: Predictor, image: str):
    """The model's data sample for the image file ``image`` (boxes in, and
    maps of, the file's own pixels), as ``tools/test.py`` computes it."""
    from mmengine.dataset import pseudo_collate
    check_image(image)
    data = pseudo_collate([predictor.pipeline(dict(img_path=image,
                                                   img_id=0))])
    with torch.no_grad():
        return predictor.model.test_step(data)[0]


def top_classes(sample, k: int) -> List[Tuple[int, float]]:
    """(class, probability) of a classifier's ``k`` most probable classes,
    most probable first."""
    scores = sample.pred_score.detach().float().cpu()
    values, indices = scores.topk(min(k, scores.numel()))
    return [(int(i), float(v)) for i, v in zip(indices, values)]


def detections(sample, score_thr: float) -> dict:
    """A detector's answer above ``score_thr`` as numpy arrays: boxes
    (N, 4), labels, scores, and masks (N, H, W) where it predicts them."""
    pred = sample.pred_instances
    keep = pred.scores >= score_thr
    out = {key: getattr(pred, key)[keep].detach().cpu().numpy()
           for key in ('bboxes', 'labels', 'scores')}
    masks = pred.masks[keep] if 'masks' in pred else None
    if masks is not None:  # a bool tensor, or mmdet's BitmapMasks
        masks = masks.to_ndarray() if hasattr(masks, 'to_ndarray') else \
            masks.detach().cpu().numpy()
    out['masks'] = masks
    return out


def seg_map(sample) -> np.ndarray:
    """A segmentor's (H, W) class map as numpy."""
    return sample.pred_sem_seg.data[0].detach().cpu().numpy()


def ignore_index(predictor: Predictor) -> int:
    """The label a segmentor's map leaves unpainted."""
    head = getattr(predictor.model, 'decode_head', None)
    value = getattr(head, 'ignore_index', 255)
    return 255 if value is None else int(value)


def names_of(predictor: Predictor, labels: Sequence[int]) -> List[str]:
    """The class names of ``labels`` (numbers where the model has none)."""
    return [class_name(predictor.classes, int(v)) for v in labels]
