"""RT-DETR's data side and recipe: the train/test pipelines of
configs/rtdetr/_base_/rtdetr_coco_detection.py on a generated COCO set,
BatchSyncDiscreteResize (sizes, boxes, metas, interpolation, draw weights,
interval, rank agreement, argument errors), and rtdetr_72e.py's optimizer
groups, warm-up and EMA against the official numbers."""
from __future__ import annotations

import json
import os.path as osp
import random
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData

import mmsparx  # noqa: F401  (registers the lazy mmdet models)
from conftest import ROOT, free_port
from mmsparx.models.data_preprocessors.batch_sync_discrete_resize import \
    BatchSyncDiscreteResize

BASE = osp.join(ROOT, 'configs', 'rtdetr', '_base_')
DATA_CFG = osp.join(BASE, 'rtdetr_coco_detection.py')
RECIPE_CFG = osp.join(BASE, 'rtdetr_72e.py')
MODEL_CFG = osp.join(BASE, 'rtdetr_r18vd.py')
SHAPES = ('rectangle', 'ellipse', 'triangle')
OFFICIAL_SIZES = [480, 512, 544, 576, 608, 640, 640, 640, 672, 704, 736, 768,
                  800]


def mmdet_scope():
    return DefaultScope.overwrite_default_scope('mmdet')


def build_dataset(root: str, loader: str, split: str):
    """The config's dataset, pointed at the generated set."""
    from mmdet.registry import DATASETS
    cfg = Config.fromfile(DATA_CFG)
    dataset = cfg[loader].dataset
    dataset.update(data_root=root + '/', metainfo=dict(classes=SHAPES),
                   ann_file=f'annotations/instances_{split}.json',
                   data_prefix=dict(img=f'{split}/'))
    with mmdet_scope():
        return DATASETS.build(dataset)


def json_boxes(root: str, split: str) -> dict:
    """image id -> [n, 4] xyxy boxes and their 0-based labels, from the
    annotation file."""
    with open(osp.join(root, 'annotations', f'instances_{split}.json')) as f:
        data = json.load(f)
    out = {im['id']: ([], []) for im in data['images']}
    for a in data['annotations']:
        x, y, w, h = a['bbox']
        out[a['image_id']][0].append([x, y, x + w, y + h])
        out[a['image_id']][1].append(a['category_id'] - 1)
    return {k: (torch.tensor(b, dtype=torch.float32).reshape(-1, 4),
                torch.tensor(lab, dtype=torch.long)) for k, (b, lab)
            in out.items()}


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --------------------------------------------------------------- pipelines

def test_train_pipeline_steps_match_the_official_ops():
    cfg = Config.fromfile(DATA_CFG)
    types = [s['type'] for s in cfg.train_pipeline]
    assert types == ['LoadImageFromFile', 'LoadAnnotations',
                     'PhotoMetricDistortion', 'Expand', 'RandomApply',
                     'FilterAnnotations', 'RandomFlip', 'Resize',
                     'FilterAnnotations', 'PackDetInputs']
    photo, expand, crop = cfg.train_pipeline[2:5]
    # torchvision: hue +-0.05 turn = 18 degrees; contrast/saturation 0.5-1.5
    assert photo.hue_delta == 18
    assert tuple(photo.contrast_range) == tuple(photo.saturation_range) \
        == (0.5, 1.5)
    assert tuple(expand.ratio_range) == (1, 4) and expand.prob == 0.5
    assert list(expand.mean) == [0, 0, 0]
    assert crop.prob == 0.8
    assert crop.transforms[0].type == 'MinIoURandomCrop'
    assert crop.transforms[0].min_crop_size == 0.3
    resize = cfg.train_pipeline[7]
    assert tuple(resize.scale) == (640, 640) and resize.keep_ratio is False
    for step in (cfg.train_pipeline[5], cfg.train_pipeline[8]):
        assert tuple(step.min_gt_bbox_wh) == (1, 1)
    loader = cfg.train_dataloader
    assert (loader.batch_size, loader.num_workers) == (4, 4)
    assert loader.persistent_workers and loader.drop_last
    assert cfg.val_evaluator.type == 'CocoMetric'
    assert cfg.val_evaluator.metric == 'bbox'


def test_min_iou_crop_options_are_the_official_ones():
    """RandomIoUCrop's sampler options {0, .1, .3, .5, .7, .9, 1 (no
    crop)}: MinIoURandomCrop adds 0 and 1 to the configured min_ious."""
    from mmdet.registry import TRANSFORMS
    cfg = Config.fromfile(DATA_CFG)
    with mmdet_scope():
        crop = TRANSFORMS.build(cfg.train_pipeline[4].transforms[0])
    assert sorted(crop.sample_mode) == [0, 0.1, 0.3, 0.5, 0.7, 0.9, 1]


def test_train_pipeline_on_generated_coco(coco_root):
    dataset = build_dataset(coco_root, 'train_dataloader', 'train')
    assert len(dataset) == 4
    truth = json_boxes(coco_root, 'train')
    seen = set()
    for seed in range(4):
        seed_all(seed)
        for index in range(len(dataset)):
            out = dataset[index]
            image, sample = out['inputs'], out['data_samples']
            assert image.shape == (3, 640, 640)
            assert sample.img_shape == (640, 640)
            boxes = sample.gt_instances.bboxes.tensor
            labels = sample.gt_instances.labels
            assert labels.dtype == torch.long
            assert ((labels >= 0) & (labels < len(SHAPES))).all()
            assert boxes.shape == (len(labels), 4)
            assert (boxes >= 0).all() and (boxes <= 640).all()
            # every kept box is wider and taller than a pixel
            assert ((boxes[:, 2:] - boxes[:, :2]) > 1).all()
            # only classes that image holds
            own = set(truth[sample.img_id][1].tolist())
            assert set(labels.tolist()) <= own
            seen.add((index, tuple(boxes.flatten().round().tolist())))
    # the augmentations are random: the same image comes out differently
    assert len(seen) > 4 * 2


def test_train_pipeline_keeps_an_image_whose_boxes_all_go(coco_root):
    """An image whose boxes are all under a pixel leaves the pipeline with
    well-formed empty targets (the official keeps it as a negative)."""
    from mmdet.registry import TRANSFORMS
    from mmdet.structures.bbox import HorizontalBoxes
    cfg = Config.fromfile(DATA_CFG)
    with mmdet_scope():
        steps = [TRANSFORMS.build(cfg.train_pipeline[i]) for i in (5, 9)]
    results = dict(
        img=np.zeros((128, 160, 3), np.uint8), img_shape=(128, 160),
        ori_shape=(128, 160), img_id=1, img_path='x.jpg', scale_factor=(
            1., 1.), flip=False, flip_direction=None,
        gt_bboxes=HorizontalBoxes(torch.tensor([[10., 10., 10.5, 30.],
                                                [5., 5., 40., 5.8]])),
        gt_bboxes_labels=np.array([0, 2]),
        gt_ignore_flags=np.array([False, False]))
    filtered = steps[0](results)
    assert filtered is not None
    packed = steps[1](filtered)['data_samples']
    assert packed.gt_instances.bboxes.shape == (0, 4)
    assert packed.gt_instances.labels.shape == (0,)
    assert packed.gt_instances.labels.dtype == torch.long


def test_test_pipeline_resizes_and_records_the_scale(coco_root):
    dataset = build_dataset(coco_root, 'val_dataloader', 'val')
    truth = json_boxes(coco_root, 'val')
    for index in range(len(dataset)):
        out = dataset[index]
        sample = out['data_samples']
        assert out['inputs'].shape == (3, 640, 640)
        assert sample.ori_shape == (128, 160)
        assert sample.img_shape == (640, 640)
        # (w, h) factors: 640 / 160 and 640 / 128
        np.testing.assert_allclose(sample.scale_factor, (4.0, 5.0))
        # boxes are loaded after the resize: the original coordinates, for
        # the evaluator
        boxes, labels = truth[sample.img_id]
        # boxes crossing the border are clipped to the image
        # (CheckedCocoDataset's policy; the evaluator reads the json)
        boxes = torch.stack([boxes[:, 0].clamp(0, 160),
                             boxes[:, 1].clamp(0, 128),
                             boxes[:, 2].clamp(0, 160),
                             boxes[:, 3].clamp(0, 128)], dim=1)
        torch.testing.assert_close(sample.gt_instances.bboxes.tensor, boxes)
        assert torch.equal(sample.gt_instances.labels, labels)


def test_preprocessor_scales_to_unit_rgb_and_resizes_in_training(coco_root):
    from mmdet.registry import MODELS
    cfg = Config.fromfile(MODEL_CFG)
    with mmdet_scope():
        preprocessor = MODELS.build(cfg.model.data_preprocessor)
    dataset = build_dataset(coco_root, 'val_dataloader', 'val')
    items = [dataset[0], dataset[1]]
    batch = dict(inputs=[i['inputs'] for i in items],
                 data_samples=[i['data_samples'] for i in items])
    out = preprocessor(batch, training=False)
    # no batch augment outside training; BGR uint8 -> RGB / 255
    assert out['inputs'].shape == (2, 3, 640, 640)
    expected = items[0]['inputs'].flip(0).float() / 255
    torch.testing.assert_close(out['inputs'][0], expected)
    assert out['inputs'].min() >= 0 and out['inputs'].max() <= 1

    torch.manual_seed(0)
    items = [dataset[0], dataset[1]]
    before = [i['data_samples'].gt_instances.bboxes.tensor.clone()
              for i in items]
    batch = dict(inputs=[i['inputs'] for i in items],
                 data_samples=[i['data_samples'] for i in items])
    out = preprocessor(batch, training=True)
    side = out['inputs'].shape[-1]
    assert side in OFFICIAL_SIZES and out['inputs'].shape[-2] == side
    for sample, boxes in zip(out['data_samples'], before):
        torch.testing.assert_close(sample.gt_instances.bboxes,
                                   boxes * side / 640)
        assert sample.batch_input_shape == (side, side)
        assert sample.img_shape == (side, side)


# --------------------------------------------------- BatchSyncDiscreteResize

def hand_batch(boxes_as_tensor: bool = True):
    """Two 640x640 images with boxes, as after DetDataPreprocessor."""
    from mmdet.structures import DetDataSample
    from mmdet.structures.bbox import HorizontalBoxes
    g = torch.Generator().manual_seed(0)
    inputs = torch.rand(2, 3, 640, 640, generator=g)
    samples = []
    for i in range(2):
        sample = DetDataSample(metainfo=dict(
            img_shape=(600, 632), pad_shape=(640, 640),
            batch_input_shape=(640, 640), scale_factor=(4.0, 5.0)))
        boxes = torch.tensor([[10., 20., 110., 220.], [0., 0., 632., 600.]])
        sample.gt_instances = InstanceData(
            bboxes=boxes if boxes_as_tensor else HorizontalBoxes(boxes),
            labels=torch.tensor([0, 1]))
        if i == 1:
            sample.ignored_instances = InstanceData(
                bboxes=torch.tensor([[40., 40., 80., 120.]]),
                labels=torch.tensor([2]))
        samples.append(sample)
    return inputs, samples


def test_registered_in_mmdet_models():
    from mmdet.registry import MODELS
    with mmdet_scope():
        augment = MODELS.build(dict(type='BatchSyncDiscreteResize',
                                    sizes=OFFICIAL_SIZES))
    assert isinstance(augment, BatchSyncDiscreteResize)
    assert augment.sizes[5] == (640, 640) and augment.interval == 1
    assert augment.interpolation == 'nearest'


def test_square_size_scales_boxes_and_metas_exactly():
    inputs, samples = hand_batch()
    augment = BatchSyncDiscreteResize([480])
    out, samples = augment(inputs, samples)
    assert out.shape == (2, 3, 480, 480)
    torch.testing.assert_close(out, F.interpolate(inputs, size=(480, 480),
                                                  mode='nearest'),
                               rtol=0, atol=0)
    # x 0.75 on both axes
    torch.testing.assert_close(
        samples[0].gt_instances.bboxes,
        torch.tensor([[7.5, 15., 82.5, 165.], [0., 0., 474., 450.]]))
    torch.testing.assert_close(samples[1].ignored_instances.bboxes,
                               torch.tensor([[30., 30., 60., 90.]]))
    for sample in samples:
        assert sample.img_shape == (450, 474)
        assert sample.pad_shape == (480, 480)
        assert sample.batch_input_shape == (480, 480)
        assert sample.scale_factor == (3.0, 3.75)


def test_hw_size_scales_each_axis_and_box_types():
    inputs, samples = hand_batch(boxes_as_tensor=False)
    augment = BatchSyncDiscreteResize([(480, 800)])
    out, samples = augment(inputs, samples)
    assert out.shape == (2, 3, 480, 800)
    # x: 800 / 640 = 1.25, y: 480 / 640 = 0.75
    torch.testing.assert_close(
        samples[0].gt_instances.bboxes.tensor,
        torch.tensor([[12.5, 15., 137.5, 165.], [0., 0., 790., 450.]]))
    assert samples[0].img_shape == (450, 790)
    assert samples[0].pad_shape == (480, 800)
    assert samples[0].scale_factor == (5.0, 3.75)


def test_nearest_by_hand():
    augment = BatchSyncDiscreteResize([(4, 4)])
    inputs = torch.tensor([[[[1., 2.], [3., 4.]]]])
    from mmdet.structures import DetDataSample
    sample = DetDataSample(metainfo=dict(img_shape=(2, 2), pad_shape=(2, 2),
                                         batch_input_shape=(2, 2)))
    sample.gt_instances = InstanceData(bboxes=torch.tensor([[0., 0., 1., 2.]]),
                                       labels=torch.tensor([0]))
    out, _ = augment(inputs, [sample])
    assert torch.equal(out[0, 0], torch.tensor([[1., 1., 2., 2.],
                                                [1., 1., 2., 2.],
                                                [3., 3., 4., 4.],
                                                [3., 3., 4., 4.]]))
    assert torch.equal(sample.gt_instances.bboxes,
                       torch.tensor([[0., 0., 2., 4.]]))
    assert sample.img_shape == (4, 4)


def test_drawn_sizes_come_from_the_list_and_resize_to_them():
    inputs, _ = hand_batch()
    inputs = inputs[:1, :1, :64, :64]
    augment = BatchSyncDiscreteResize([32, 64, (48, 96)])
    torch.manual_seed(1)
    shapes = set()
    for _ in range(12):
        out, _ = augment(inputs, [])
        assert augment.size in [(32, 32), (64, 64), (48, 96)]
        assert tuple(out.shape[-2:]) == augment.size
        shapes.add(augment.size)
    assert len(shapes) == 3


def test_official_list_weights_640_three_times():
    augment = BatchSyncDiscreteResize(OFFICIAL_SIZES)
    torch.manual_seed(0)
    draws = 26000
    counts = Counter(augment._draw(torch.device('cpu'))[0]
                     for _ in range(draws))
    assert set(counts) == set(OFFICIAL_SIZES)
    # 640: 3/13 = 0.2308; every other size 1/13 = 0.0769 (binomial standard
    # error 0.0026 and 0.0017 at this count)
    assert abs(counts[640] / draws - 3 / 13) < 0.01
    for size in set(OFFICIAL_SIZES) - {640}:
        assert abs(counts[size] / draws - 1 / 13) < 0.008, size


def test_interval_keeps_the_size_between_draws(monkeypatch):
    augment = BatchSyncDiscreteResize([8, 16, 24, 32], interval=3)
    drawn_at = []
    calls = [0]
    real_draw = augment._draw

    def counting_draw(device):
        drawn_at.append(calls[0])
        return real_draw(device)

    monkeypatch.setattr(augment, '_draw', counting_draw)
    torch.manual_seed(0)
    inputs = torch.rand(1, 1, 8, 8)
    sizes = []
    for call in range(9):
        calls[0] = call
        out, _ = augment(inputs, [])
        sizes.append(tuple(out.shape[-2:]))
    assert drawn_at == [0, 3, 6]
    for start in (0, 3, 6):
        assert sizes[start] == sizes[start + 1] == sizes[start + 2]


def test_empty_ground_truth_is_fine():
    from mmdet.structures import DetDataSample
    sample = DetDataSample(metainfo=dict(img_shape=(640, 640),
                                         pad_shape=(640, 640),
                                         batch_input_shape=(640, 640)))
    sample.gt_instances = InstanceData(bboxes=torch.zeros(0, 4),
                                       labels=torch.zeros(0, dtype=torch.long))
    augment = BatchSyncDiscreteResize([320])
    out, (sample, ) = augment(torch.rand(1, 3, 640, 640), [sample])
    assert out.shape == (1, 3, 320, 320)
    assert sample.gt_instances.bboxes.shape == (0, 4)
    assert sample.img_shape == (320, 320)


@pytest.mark.parametrize('kwargs, error, words', [
    (dict(sizes=[]), ValueError, 'non-empty list of sizes'),
    (dict(sizes=640), ValueError, 'non-empty list of sizes'),
    (dict(sizes=[640], interpolation='linear'), ValueError, "'nearest'"),
    (dict(sizes=[640], interval=0), ValueError, 'interval must be an int'),
    (dict(sizes=[(640, )]), TypeError, '(h, w) pair'),
    (dict(sizes=[640.0]), TypeError, '(h, w) pair'),
    (dict(sizes=[0, 640]), ValueError, 'positive'),
])
def test_bad_arguments_say_what_to_fix(kwargs, error, words):
    with pytest.raises(error, match=words.replace('(', r'\(').replace(
            ')', r'\)')):
        BatchSyncDiscreteResize(**kwargs)


def test_masks_are_refused_with_the_fix():
    inputs, samples = hand_batch()
    samples[0].gt_instances.masks = torch.zeros(2, 640, 640, dtype=torch.bool)
    with pytest.raises(ValueError, match='with_mask=False'):
        BatchSyncDiscreteResize([480])(inputs, samples)


def _rank_sizes(rank: int, world: int, port: int, queue) -> None:
    import torch.distributed as dist
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}',
                            rank=rank, world_size=world)
    torch.manual_seed(100 + rank)  # different streams: only rank 0's counts
    augment = BatchSyncDiscreteResize(OFFICIAL_SIZES)
    inputs = torch.rand(1, 1, 4, 4)
    sizes = [tuple(augment(inputs, [])[0].shape[-2:]) for _ in range(8)]
    queue.put((rank, sizes))
    dist.destroy_process_group()


def test_ranks_agree_on_the_size():
    import torch.multiprocessing as mp
    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_rank_sizes, args=(r, 2, port, queue))
             for r in range(2)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert results[0] == results[1]
    # what rank 0's own stream draws
    torch.manual_seed(100)
    torch.rand(1, 1, 4, 4)  # the batch the ranks made after seeding
    expected = [OFFICIAL_SIZES[int(torch.randint(13, (1, )))]
                for _ in range(8)]
    assert [s[0] for s in results[0]] == expected
