"""Config + checkpoint -> ONNX file (+ check): what ``export_onnx.py`` runs."""
from __future__ import annotations

import contextlib
import copy
import os.path as osp
from typing import Dict, Iterator, Optional, Sequence, Tuple

import torch
from torch import nn

from mmsparx.deploy.compare import (check_inputs, compare_argmax,
                                    compare_detections, compare_dense,
                                    normalisation)
from mmsparx.deploy.onnx_export import (DEFAULT_OPSET, export_onnx,
                                        run_onnxruntime)
from mmsparx.deploy.wrappers import SIGNATURES, export_module

CHECK_DYNAMIC_BATCH = 2  # a dynamic graph is traced at 1, checked at 2


class DeployError(ValueError):
    """A refused export: one paragraph naming the problem and the fix."""


@contextlib.contextmanager
def restored_default_scope() -> Iterator[None]:
    """Building a model sets mmengine's default scope for the process (the
    config's toolbox); inside this block that change is undone on exit, so
    an in-process export leaves later registry look-ups as it found them."""
    from mmengine.registry import DefaultScope
    saved = copy.deepcopy(DefaultScope._instance_dict)
    try:
        yield
    finally:
        DefaultScope._instance_dict = saved


def default_shape(cfg, scope: str, model: nn.Module) -> Tuple[int, int]:
    """The deployment size a config implies."""
    from mmsparx.apis.model import CONVENTIONS, classifier_input
    if scope == 'mmpretrain':
        return classifier_input(cfg)
    if scope == 'mmdet':
        return CONVENTIONS.get(type(model).__name__, {}).get('input',
                                                             (640, 640))
    crop = cfg.get('crop_size')
    return (int(crop[0]), int(crop[1])) if crop else (512, 512)


def _reference(module: nn.Module, inputs, shape, config: str):
    try:
        with torch.no_grad():
            out = module(*inputs)
    except RuntimeError as err:
        raise DeployError(
            f'the model of {config} cannot run at {shape[0]}x{shape[1]}: '
            f'{err}. Give --shape H W with sides the model accepts '
            f'(multiples of 32 for every backbone here).') from err
    return out if isinstance(out, tuple) else (out, )


def _compare(task: str, module: nn.Module, inputs, onnx_file: str,
             reference) -> Dict[str, object]:
    names = SIGNATURES[task][0]
    got = run_onnxruntime(onnx_file, {
        name: t.numpy() for name, t in zip(names, inputs)})
    if task == 'detection':
        return compare_detections(reference, got)
    if task == 'segmentation-argmax':
        with torch.no_grad():
            logits = module.model.encode_decode(inputs[0], module.metas)
        return compare_argmax(logits, got[0])
    return compare_dense(reference[0], got[0])


def prepare(config: str, checkpoint: Optional[str],
            shape: Optional[Sequence[int]] = None,
            seg_output: str = 'logits', cfg_options: Optional[dict] = None
            ) -> Tuple[nn.Module, str, nn.Module, Tuple[int, int]]:
    """(module to export, task, the built model, input size) for
    ``config`` (with ``cfg_options`` merged), loaded from ``checkpoint``
    (None: initial weights, for timing only). Sets the config's default
    scope (see :func:`restored_default_scope`)."""
    from mmsparx.apis import load_checkpoint, load_model
    from mmsparx.fileio import CheckpointError
    from mmsparx.registry import UnknownArgumentError

    if not osp.isfile(config):
        raise FileNotFoundError(f'config {config} does not exist.')
    try:
        model, scope, cfg = load_model(config, cfg_options)
    except (ValueError, UnknownArgumentError) as err:
        raise DeployError(str(err)) from err
    if checkpoint is not None:
        try:
            load_checkpoint(model, checkpoint, config)
        except CheckpointError as err:
            raise DeployError(str(err)) from err
    shape = tuple(int(v) for v in (shape or default_shape(cfg, scope,
                                                          model)))
    if min(shape) < 32:
        raise DeployError(f'--shape {shape[0]} {shape[1]} is too small: '
                          f'the backbones downsample by 32.')
    try:
        module, task = export_module(model, scope, shape, seg_output)
    except (TypeError, ValueError) as err:
        raise DeployError(str(err)) from err
    return module, task, model, shape


def export_config(config: str, checkpoint: str, out: str,
                  shape: Optional[Sequence[int]] = None, batch: int = 1,
                  dynamic_batch: bool = False, opset: Optional[int] = None,
                  seg_output: str = 'logits', check: bool = False,
                  cfg_options: Optional[dict] = None) -> Dict[str, object]:
    """Export the model of ``config`` with the weights of ``checkpoint`` to
    ``out``; with ``check``, compare ONNX Runtime with PyTorch. Returns a
    summary (what was written, the normalisation, the check's figures)."""
    if osp.abspath(out) == osp.abspath(checkpoint):
        raise DeployError(f'--out {out} is the checkpoint itself; write the '
                          f'ONNX file elsewhere.')
    if batch < 1:
        raise DeployError(f'--batch {batch}: give a batch of at least 1.')
    with restored_default_scope():
        return _export(config, checkpoint, out, shape, batch, dynamic_batch,
                       opset, seg_output, check, cfg_options)


def _export(config, checkpoint, out, shape, batch, dynamic_batch, opset,
            seg_output, check, cfg_options) -> Dict[str, object]:
    module, task, model, shape = prepare(config, checkpoint, shape,
                                         seg_output, cfg_options)
    trace_batch = 1 if dynamic_batch else batch
    inputs = check_inputs(model, task, shape, trace_batch)
    _reference(module, inputs, shape, config)
    input_names, output_names = SIGNATURES[task]
    norm = normalisation(model)
    export_onnx(module, inputs, out, input_names, output_names,
                dynamic_batch=dynamic_batch, opset=opset or DEFAULT_OPSET,
                metadata=dict(config=osp.basename(config), task=task,
                              input_size=list(shape), **norm))
    summary = dict(onnx=out, task=task, inputs=list(input_names),
                   outputs=list(output_names), input_size=list(shape),
                   batch='dynamic' if dynamic_batch else batch,
                   normalisation=norm)
    if check:
        check_batch = CHECK_DYNAMIC_BATCH if dynamic_batch else batch
        inputs = check_inputs(model, task, shape, check_batch, seed=1)
        reference = _reference(module, inputs, shape, config)
        summary['check'] = dict(batch=check_batch, **_compare(
            task, module, inputs, out, reference))
    return summary
