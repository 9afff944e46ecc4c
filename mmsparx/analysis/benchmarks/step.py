"""Time whole training steps of OpenMMLab configs on this device.

    python tools/analysis_tools/benchmark.py step CONFIG [CONFIG ...] [--size H W] [--batch 2] [--warmup 3] [--runs 10] [--amp] [--json]

CONFIG is a file (configs/sparx/mask-rcnn_sparx-mamba-t_fpn_1x_coco.py) or
a toolbox's own config as ``pkg::path``
(``mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py``,
``mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py``).
The model is built as the config says, without pretrained weights (nothing
is downloaded), and trained on a random batch (images + a few boxes and
masks for detection, label maps for segmentation) through its own
``train_step``: data preprocessor, losses, backward and the config's
optim wrapper (optimizer, parameter groups, clipping). The preprocessor's
batch augments (RT-DETR's multi-scale resize) are dropped so every step
runs at the given size. Default sizes: Mask R-CNN 800x1344, RT-DETR
640x640, segmentors 512x512.

Reported per config: the median s/iter after the warm-up steps
(``mmsparx.analysis.timing``) and the peak memory of the steps
(``mmsparx.analysis.peak_memory``, named by ``peak_kind``): CUDA's max
allocated, or on CPU the process's peak RSS (the first config's figure is
the fair one). ``--amp`` swaps in
mmengine's AmpOptimWrapper (float16, CUDA only). A config that fails gives
a row with its error; the exit status is then 1.
"""
from __future__ import annotations

import argparse
import gc
import json
import os.path as osp
import traceback
from typing import Dict, Optional, Sequence, Tuple

import torch

from mmsparx.analysis.peak_memory import PeakMemory, peak_rss_mib
from mmsparx.analysis.synthetic_batch import (detection_batch,
                                              segmentation_batch)
from mmsparx.analysis.timing import time_runs
from mmsparx.utils.cli import json_stdout

DEFAULT_SIZES = {'MaskRCNN': (800, 1344), 'RTDETR': (640, 640)}
SEGMENTATION_SIZE = (512, 512)


def resolve_config(config: str) -> str:
    """A file path; ``pkg::rel`` is the toolbox's ``.mim/configs/rel``."""
    if '::' in config:
        from mmengine.utils import get_installed_path
        package, rel = config.split('::', 1)
        config = osp.join(get_installed_path(package), '.mim', 'configs',
                          rel)
    if not osp.isfile(config):
        raise FileNotFoundError(f'config {config} does not exist')
    return config


def load_cfg(config: str, size: Optional[Sequence[int]], cuda: bool):
    """The config ready for one process on this device: no pretrained
    weights, no batch augments, no SyncBN without CUDA, the segmentation
    preprocessor padding to ``size``."""
    from mmsparx.utils.cli import load_config
    from mmsparx.utils.runtime import adapt_cfg_to_device
    cfg = load_config(resolve_config(config), None, 'none', None)
    adapt_cfg_to_device(cfg, distributed=False, cuda=cuda)
    preprocessor = cfg.model.get('data_preprocessor') or cfg.get(
        'data_preprocessor') or {}
    preprocessor.pop('batch_augments', None)
    if cfg.default_scope == 'mmseg' and size is not None:
        preprocessor['size'] = tuple(size)
    if not cuda and 'Amp' in cfg.optim_wrapper.get('type', ''):
        cfg.optim_wrapper.type = 'OptimWrapper'
        cfg.optim_wrapper.pop('dtype', None)
        cfg.optim_wrapper.pop('loss_scale', None)
    return cfg


def smallest_num_classes(node, found: Optional[int] = None
                         ) -> Optional[int]:
    """The smallest ``num_classes`` in a model config (every head takes
    labels below it)."""
    if isinstance(node, dict):
        value = node.get('num_classes')
        if isinstance(value, int):
            found = value if found is None else min(found, value)
        for child in node.values():
            found = smallest_num_classes(child, found)
    elif isinstance(node, (list, tuple)):
        for child in node:
            found = smallest_num_classes(child, found)
    return found


def default_size(cfg) -> Tuple[int, int]:
    if cfg.default_scope == 'mmseg':
        return SEGMENTATION_SIZE
    return DEFAULT_SIZES.get(cfg.model.type, (800, 1344))


def build(cfg, device: torch.device):
    """(model on ``device`` with its init weights, optim wrapper). The
    mmsparx models are registered already: importing any mmsparx module
    runs the package's ``__init__``, which registers them."""
    from mmengine.optim import build_optim_wrapper

    from mmsparx.apis import build_model
    model = build_model(cfg, pretrained=False)
    model.init_weights()
    model = model.to(device).train()
    return model, build_optim_wrapper(model, cfg.optim_wrapper)


def synthetic_batch(cfg, batch: int, size: Sequence[int]) -> Dict[str, list]:
    classes = smallest_num_classes(cfg.model) or 3
    if cfg.default_scope == 'mmseg':
        return segmentation_batch(batch, size, classes)
    return detection_batch(batch, size, classes)


def measure(config: str, batch: int, size: Optional[Sequence[int]],
            device: torch.device, warmup: int, runs: int,
            amp: bool = False) -> dict:
    """One config's row: median s/iter, peak memory, last loss."""
    cuda = device.type == 'cuda'
    cfg = load_cfg(config, size, cuda)
    if amp:
        if not cuda:
            raise ValueError('--amp needs CUDA (mmengine AmpOptimWrapper)')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.dtype = 'float16'
    size = tuple(size or default_size(cfg))
    torch.manual_seed(0)
    model, wrapper = build(cfg, device)
    data = synthetic_batch(cfg, batch, size)
    losses: dict = {}

    def step() -> None:
        losses.update(model.train_step(data, wrapper))

    peak = PeakMemory(device)
    timing = time_runs(step, warmup, runs, device)
    loss = float(losses.get('loss', float('nan')))
    return dict(config=config, model=cfg.model.type,
                backbone=cfg.model.get('backbone', {}).get('type'),
                batch=batch, size=list(size), device=str(device),
                optim_wrapper=cfg.optim_wrapper.type,
                s_per_iter=timing.median,
                # On a CPU the process's whole peak RSS, as this tool always
                # reported: a step's growth reads 0 once an earlier config
                # or the model's build set the peak.
                peak_mem_mb=round(peak.mib() if peak.cuda else
                                  peak_rss_mib(), 1),
                peak_kind=peak.kind if peak.cuda else 'process_peak_rss',
                loss=loss)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('configs', nargs='+')
    parser.add_argument('--size', type=int, nargs=2, metavar=('H', 'W'),
                        help='input size (default: by model, see above)')
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--runs', type=int, default=10)
    parser.add_argument('--device', default='cuda' if
                        torch.cuda.is_available() else 'cpu')
    parser.add_argument('--amp', action='store_true',
                        help='AmpOptimWrapper, float16 (CUDA only)')
    parser.add_argument('--json', action='store_true')


def run(args: argparse.Namespace) -> int:
    device = torch.device(args.device)
    rows = []
    with json_stdout(args.json):  # logs to stderr: stdout is the JSON
        for config in args.configs:
            try:
                rows.append(measure(config, args.batch, args.size, device,
                                    args.warmup, args.runs, args.amp))
            except Exception as err:  # one config's failure is its row
                traceback.print_exc()
                rows.append(dict(config=config, error=f'{type(err).__name__}'
                                 f': {err}'))
            gc.collect()
            if device.type == 'cuda':
                torch.cuda.empty_cache()
    if args.json:
        print(json.dumps(rows))
    else:
        for row in rows:
            if 'error' in row:
                print(f'{row["config"]}: FAILED {row["error"]}')
                continue
            print(f'{row["config"]}: {row["s_per_iter"]:.3f} s/iter, '
                  f'{row["peak_mem_mb"]:.0f} MB peak ({row["peak_kind"]}), '
                  f'batch {row["batch"]} at {row["size"][0]}x'
                  f'{row["size"][1]}, loss {row["loss"]:.3f}')
    return 1 if any('error' in row for row in rows) else 0
