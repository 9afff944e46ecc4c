"""Every trained config (detection, segmentation, classification) trains
one iteration on small generated data through its own runner, and
validates where it has a metric; the 3x pipeline runs.

Sizes: one training image (the segmentors two: the BatchNorm after
UperNet's 1x1 pooling needs two values) and one validation image; the
detectors at 64x51 (keeping 20 boxes at validation), the segmentors at a
32x32 crop, the classifiers at 64x64 (SparseSwin's at its 224). The
models are the configs' own."""
from __future__ import annotations

import gc
import os.path as osp
from typing import Dict, Iterator, List, Optional, Tuple

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook

from conftest import load_test_config
from mmsparx.apis import build_runner, prepare_device
from test_config_matrix import (CLS, CONFIG_DIR, DET, DET_3X, SEG,
                                SMALL_CLS, load)

# The detectors' Resize scale (w, h): the generated 160x128 images at
# 64x51, padded to 64x64 (stride 32 leaves a 2x2 map; enough to show a
# config trains).
TINY_DET = (64, 64)
# The segmentors' crop side (test images resized to this short side).
TINY_SEG = 32


@pytest.fixture(scope='module', autouse=True)
def unfreeze_at_end() -> Iterator[None]:
    yield
    gc.unfreeze()


@pytest.fixture
def free_runner() -> Iterator[None]:
    """Collect the test's runner after it (runners sit in reference cycles
    that Python frees late, and a B model with its optimiser is 1-2 GB),
    then freeze what survives (the modules, the toolboxes' registries:
    hundreds of thousands of objects, none garbage after the collection)
    out of the cyclic collector's later scans: each full collection, this
    one and Python's own during the next test, then walks only what that
    test made. The module's end unfreezes them."""
    yield
    gc.collect()
    gc.freeze()


class OneStep(Hook):
    """Records the first training batch's input sizes and ends training
    after the first validation (the configs' schedules keep their lengths;
    the loop just stops)."""

    def __init__(self) -> None:
        self.input_sizes: List[Tuple[int, ...]] = []

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        if not self.input_sizes:
            self.input_sizes = [tuple(x.shape) for x in data_batch['inputs']]

    def after_val_epoch(self, runner, metrics=None) -> None:
        runner.train_loop.stop_training = True


def set_transform(pipeline: list, kind: str, **fields) -> None:
    """Update the (one) transform of type ``kind`` in ``pipeline``."""
    found = [t for t in pipeline if t['type'] == kind]
    assert len(found) == 1, (kind, [t['type'] for t in pipeline])
    found[0].update(fields)


def small_loaders(cfg: Config, train_batch: int, val_images: int) -> None:
    """One training batch, ``val_images`` validation images, no workers."""
    cfg.train_dataloader.update(batch_size=train_batch, num_workers=0,
                                persistent_workers=False)
    cfg.train_dataloader.dataset.indices = train_batch
    cfg.val_dataloader.update(batch_size=min(val_images, 2), num_workers=0,
                              persistent_workers=False)
    cfg.val_dataloader.dataset.indices = val_images
    # A serialised dataset runs gc.collect() (0.5 s here); it only saves
    # memory with several workers.
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        loader.dataset.serialize_data = False
    cfg.test_dataloader = cfg.val_dataloader


def quiet_checkpoints(cfg: Config) -> Optional[str]:
    """No checkpoint files (a B model and its optimiser are over 1 GB);
    returns the metric the config keeps the best checkpoint by."""
    hook = cfg.default_hooks.checkpoint
    save_best = hook.get('save_best')
    hook.update(interval=-1, save_last=False, save_best=None)
    return save_best


def train_once(cfg: Config, name: str) -> Tuple[object, OneStep]:
    """Build the runner as tools/train.py does, train to the first
    validation, check one finite step was taken and what the config asks
    of BatchNorms, frozen stages and loss terms; returns the runner and the
    hook that saw the step."""
    cfg.train_cfg.val_interval = 1
    cfg.default_hooks.logger.interval = 1
    cfg.randomness = dict(seed=0)
    sync_bn = cfg.get('sync_bn')
    changes = prepare_device(cfg)
    if sync_bn and not torch.cuda.is_available():
        assert f'sync_bn: {sync_bn} -> None' in changes
    runner = build_runner(cfg, name, changes)
    step = OneStep()
    runner.register_hook(step, priority='LOWEST')
    runner.train()
    assert runner.iter == 1 and step.input_sizes
    scalars = runner.message_hub.log_scalars
    loss = scalars['train/loss'].current()
    assert torch.isfinite(torch.tensor(loss)), loss
    backbone = runner.model.backbone
    if getattr(backbone, 'norm_eval', False):
        # BatchNorms keep their (ImageNet) statistics: never updated.
        norms = [m for m in backbone.modules()
                 if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        assert norms and all(int(m.num_batches_tracked) == 0 for m in norms)
    frozen = getattr(backbone, 'frozen_stages', -1)
    if frozen > 0:
        stages = [stage.blocks for stage in backbone.stages]
        assert not any(p.requires_grad
                       for p in stages[frozen - 1].parameters())
        assert all(p.requires_grad for p in stages[frozen].parameters())
    if cfg.model.get('attn_reg'):
        # SparseSwin's attention regulariser: off (0) or a part of the loss.
        reg = scalars['train/loss_attn_reg'].current()
        if cfg.model.attn_reg.loss_weight == 0:
            assert reg == 0
        else:
            assert 0 < reg < loss
    return runner, step


def val_metrics(runner) -> Dict[str, float]:
    return {k[4:]: v.current()
            for k, v in runner.message_hub.log_scalars.items()
            if k.startswith('val/')}


def coco_data(cfg: Config, root: str) -> None:
    """The generated COCO set (3 shape classes) in place of COCO."""
    shapes = dict(classes=('rectangle', 'ellipse', 'triangle'))
    for loader, split in (('train_dataloader', 'train'),
                          ('val_dataloader', 'val')):
        cfg[loader].dataset.update(
            data_root=root + '/', metainfo=shapes,
            ann_file=f'annotations/instances_{split}.json',
            data_prefix=dict(img=f'{split}/'))
    cfg.val_evaluator.ann_file = osp.join(root, 'annotations',
                                          'instances_val.json')
    cfg.test_evaluator = cfg.val_evaluator


@pytest.mark.parametrize('name', DET)
@pytest.mark.usefixtures('free_runner')
def test_det_trains_one_iteration(name, coco_root, tmp_path):
    cfg = load_test_config(osp.join(CONFIG_DIR, name), None, tmp_path)
    coco_data(cfg, coco_root)
    small_loaders(cfg, train_batch=1, val_images=1)
    set_transform(cfg.train_dataloader.dataset.pipeline, 'Resize',
                  scale=TINY_DET)
    set_transform(cfg.val_dataloader.dataset.pipeline, 'Resize',
                  scale=TINY_DET)
    model = cfg.model
    model.backbone.init_cfg = None
    model.roi_head.bbox_head.num_classes = 3
    model.roi_head.mask_head.num_classes = 3
    # Fewer boxes through the heads at validation (an untrained model keeps
    # the most): one 64x51 image of 3 shape classes needs no 100 masks.
    model.test_cfg.rpn.max_per_img = 100
    model.test_cfg.rcnn.max_per_img = 20
    save_best = quiet_checkpoints(cfg)
    runner, step = train_once(cfg, name)
    assert step.input_sizes == [(3, 51, 64)]
    metrics = val_metrics(runner)
    assert {'coco/bbox_mAP', 'coco/segm_mAP'} <= set(metrics)
    assert save_best in (None, 'auto')


@pytest.mark.parametrize('name', DET_3X)
def test_3x_train_pipeline(name, coco_root):
    """The multi-scale crop pipeline, at its real scales, on the generated
    images: every sample ends with a short side of 480..800 (step 32)."""
    from mmdet.registry import DATASETS
    from mmengine.registry import DefaultScope
    from mmengine.runner import set_random_seed
    cfg = load(name)
    assert cfg.train_cfg.max_epochs == 36
    assert cfg.param_scheduler[1].milestones == [27, 33]
    coco_data(cfg, coco_root)
    with DefaultScope.overwrite_default_scope('mmdet'):
        dataset = DATASETS.build(cfg.train_dataloader.dataset)
    set_random_seed(0)
    for index in (0, 1, 2, 3, 0, 1):
        sample = dataset[index]
        height, width = sample['inputs'].shape[1:]
        assert min(height, width) in range(480, 801, 32), (height, width)


def ade_data(cfg: Config, root: str) -> None:
    """The generated ADE20K set at a TINY_SEG square crop."""
    crop = (TINY_SEG, TINY_SEG)
    cfg.model.backbone.init_cfg = None
    cfg.model.data_preprocessor.size = crop
    for loader in ('train_dataloader', 'val_dataloader'):
        cfg[loader].dataset.data_root = root
    train = cfg.train_dataloader.dataset.pipeline
    set_transform(train, 'RandomResize', scale=(4 * TINY_SEG, TINY_SEG))
    set_transform(train, 'RandomCrop', crop_size=crop)
    set_transform(cfg.val_dataloader.dataset.pipeline, 'Resize',
                  scale=(4 * TINY_SEG, TINY_SEG))


@pytest.mark.parametrize('name', SEG)
@pytest.mark.usefixtures('free_runner')
def test_seg_trains_one_iteration(name, ade_root, tmp_path):
    cfg = load_test_config(osp.join(CONFIG_DIR, name), None, tmp_path)
    ade_data(cfg, ade_root)
    small_loaders(cfg, train_batch=2, val_images=1)
    save_best = quiet_checkpoints(cfg)
    runner, step = train_once(cfg, name)
    assert all(max(s) <= TINY_SEG for s in step.input_sizes)
    metrics = val_metrics(runner)
    assert 'mIoU' in metrics
    assert save_best is None or save_best in metrics


def imagenet_data(cfg: Config, root: str, side: int) -> None:
    """The generated ImageNet-format set (32x32 images, 4 classes) with
    crops of ``side``; the heads keep their classes. CIFAR configs read it
    too (their pipelines take decoded arrays: it gets a loader first)."""
    classes = osp.join(root, 'meta', 'classes.txt')
    for loader, split in (('train_dataloader', 'train'),
                          ('val_dataloader', 'val')):
        dataset = cfg[loader].dataset
        pipeline = dataset.pipeline
        if pipeline[0]['type'] != 'LoadImageFromFile':
            pipeline.insert(0, dict(type='LoadImageFromFile'))
        cfg[loader].dataset = dict(type='ImageNet', data_root=root,
                                   split=split, classes=classes,
                                   pipeline=pipeline)
    train = cfg.train_dataloader.dataset.pipeline
    test = cfg.val_dataloader.dataset.pipeline
    set_transform(train, 'RandomResizedCrop', scale=side)
    types = [t['type'] for t in test]
    if 'CenterCrop' in types:
        set_transform(test, 'ResizeEdge', scale=side * 8 // 7)
        set_transform(test, 'CenterCrop', crop_size=side)
    else:
        set_transform(test, 'Resize', scale=(side, side))


@pytest.mark.parametrize('name', CLS)
@pytest.mark.usefixtures('free_runner')
def test_cls_trains_one_iteration(name, imagenet_root, tmp_path):
    cfg = load_test_config(osp.join(CONFIG_DIR, name), None, tmp_path)
    side = 224 if cfg.model.backbone.type == 'SparseSwin' else SMALL_CLS
    cfg.model.backbone.init_cfg = None
    imagenet_data(cfg, imagenet_root, side)
    small_loaders(cfg, train_batch=1, val_images=1)
    quiet_checkpoints(cfg)
    runner, step = train_once(cfg, name)
    assert step.input_sizes == [(3, side, side)]
    metrics = val_metrics(runner)
    topk = cfg.val_evaluator.topk
    assert {f'accuracy/top{k}' for k in topk} <= set(metrics)
