"""Export a traced module to ONNX and run the file in ONNX Runtime.

The exporter is torch's TorchScript one (``dynamo=False``): every mmsparx
model already traces (FLOP counts use the same path), where
``torch.export`` would also have to take mmcv's and mmdet's Python. Inside
:func:`mmsparx.ops.onnx_export_mode` the selective scan is the doubling
scan; every other layer takes its PyTorch path when traced (no C++ kernel
is called under ``torch.jit.is_tracing()``), and ``rewrites.py`` swaps the
few library functions that do not export or bake the batch in.
"""
from __future__ import annotations

import importlib
import json
import os
import os.path as osp
import tempfile
import warnings
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn

DEFAULT_OPSET = 17  # LayerNormalization and GridSample (16) are standard


def require(name: str):
    """Import an optional deployment package or say how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise ImportError(
            f'{name} is needed for ONNX export and checks but is not '
            f'installed: `make setup` installs it (requirements/deploy.txt), '
            f'or `pip install -c requirements/constraints.txt onnx '
            f'onnxruntime` in your environment.') from err


def export_onnx(module: nn.Module, inputs: Sequence[torch.Tensor], out: str,
                input_names: Sequence[str], output_names: Sequence[str],
                dynamic_batch: bool = False, opset: int = DEFAULT_OPSET,
                metadata: Optional[Mapping[str, object]] = None) -> None:
    """Trace ``module(*inputs)`` into the ONNX file ``out``.

    With ``dynamic_batch`` the first axis of every input and output is
    named ``batch`` and left free. ``metadata`` goes into the file's
    ``metadata_props`` (JSON-encoded values). The file is written next to
    ``out`` and moved into place once complete and checked.
    """
    onnx = require('onnx')
    from mmsparx.ops import onnx_export_mode

    from mmsparx.deploy.rewrites import export_rewrites

    if opset < 16:
        raise ValueError(f'opset {opset} is too old: the deformable '
                         f'attention needs GridSample (opset 16); use '
                         f'{DEFAULT_OPSET} or later.')
    axes = None
    if dynamic_batch:
        axes = {name: {0: 'batch'}
                for name in list(input_names) + list(output_names)}
    folder = osp.dirname(osp.abspath(out))
    os.makedirs(folder, exist_ok=True)
    handle, partial = tempfile.mkstemp(suffix='.onnx.part', dir=folder)
    os.close(handle)
    try:
        with torch.no_grad(), onnx_export_mode(), export_rewrites(), \
                warnings.catch_warnings():
            # Shapes become constants in a fixed-size graph: expected here.
            warnings.simplefilter('ignore', torch.jit.TracerWarning)
            warnings.filterwarnings('ignore', category=DeprecationWarning)
            warnings.filterwarnings('ignore', category=FutureWarning)
            warnings.filterwarnings('ignore', message='Constant folding')
            torch.onnx.export(module, tuple(inputs), partial, dynamo=False,
                              input_names=list(input_names),
                              output_names=list(output_names),
                              dynamic_axes=axes, opset_version=opset,
                              do_constant_folding=True)
        model = onnx.load(partial)
        onnx.checker.check_model(model)
        for key, value in (metadata or {}).items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, json.dumps(value)
        onnx.save(model, partial)
        os.replace(partial, out)
    finally:
        if osp.exists(partial):
            os.remove(partial)


def read_metadata(path: str) -> Dict[str, object]:
    """The ``metadata_props`` :func:`export_onnx` wrote, decoded."""
    onnx = require('onnx')
    model = onnx.load(path, load_external_data=False)
    return {p.key: json.loads(p.value) for p in model.metadata_props}


def session(path: str, threads: Optional[int] = None):
    """An ONNX Runtime CPU session for ``path``."""
    ort = require('onnxruntime')
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(path, options,
                                providers=['CPUExecutionProvider'])


def run_onnxruntime(path: str, feeds: Mapping[str, np.ndarray],
                    threads: Optional[int] = None) -> List[np.ndarray]:
    """The outputs of the ONNX file on ``feeds`` (name -> array)."""
    return session(path, threads).run(None, dict(feeds))
