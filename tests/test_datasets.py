"""Generated datasets: deterministic, consistent, readable by the toolboxes."""
import filecmp
import json
import os
import os.path as osp

import numpy as np
from PIL import Image
from scipy.ndimage import binary_erosion

from mmsparx.datasets import (generate_ade20k, generate_coco,
                              generate_imagenet)


def same_tree(a, b) -> bool:
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only or cmp.diff_files:
        return False
    match, mismatch, errors = filecmp.cmpfiles(
        a, b, cmp.common_files, shallow=False)
    return not mismatch and not errors and all(
        same_tree(osp.join(a, d), osp.join(b, d)) for d in cmp.common_dirs)


def test_same_seed_same_bytes(tmp_path):
    for name, generate, kwargs in (
            ('coco', generate_coco, dict(num_train=3, num_val=1)),
            ('ade', generate_ade20k, dict(num_train=2, num_val=1)),
            ('in', generate_imagenet, dict(num_classes=3))):
        generate(str(tmp_path / f'{name}1'), seed=5, **kwargs)
        generate(str(tmp_path / f'{name}2'), seed=5, **kwargs)
        generate(str(tmp_path / f'{name}3'), seed=6, **kwargs)
        assert same_tree(tmp_path / f'{name}1', tmp_path / f'{name}2')
        assert not same_tree(tmp_path / f'{name}1', tmp_path / f'{name}3')


def test_coco_annotations_match_the_pixels(coco_root):
    from pycocotools.coco import COCO
    coco = COCO(osp.join(coco_root, 'annotations', 'instances_train.json'))
    assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == [
        'rectangle', 'ellipse', 'triangle']
    assert len(coco.getImgIds()) == 4
    for ann in coco.loadAnns(coco.getAnnIds()):
        info = coco.loadImgs(ann['image_id'])[0]
        x, y, w, h = ann['bbox']
        assert 0 <= x and 0 <= y and x + w <= info['width'] and \
            y + h <= info['height']
        mask = coco.annToMask(ann)
        # Rasterised polygon agrees with the stored area and box.
        assert abs(mask.sum() - ann['area']) / ann['area'] < 0.15
        ys, xs = np.nonzero(mask)
        assert abs(xs.min() - x) <= 1.5 and abs(ys.min() - y) <= 1.5
        # The shape is drawn in one flat colour inside its mask (edges and
        # JPEG ringing aside).
        image = np.asarray(Image.open(osp.join(
            coco_root, 'train', info['file_name'])), dtype=np.float32)
        inner = image[binary_erosion(mask, iterations=2)]
        assert inner.std(axis=0).max() < 6


def test_coco_loads_in_mmdet(coco_root):
    from mmdet.datasets import CocoDataset
    dataset = CocoDataset(
        data_root=coco_root, ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        metainfo=dict(classes=('rectangle', 'ellipse', 'triangle')),
        pipeline=[])
    assert len(dataset) == 2
    item = dataset[0]
    assert osp.isfile(item['img_path'])
    assert all(len(inst['mask'][0]) >= 6 for inst in item['instances'])


def test_ade20k_labels_and_reduce_zero_label(ade_root):
    from mmengine.registry import DefaultScope
    from mmseg.datasets import ADE20KDataset
    with DefaultScope.overwrite_default_scope('mmseg'):
        dataset = ADE20KDataset(
            data_root=ade_root,
            data_prefix=dict(img_path='images/training',
                             seg_map_path='annotations/training'),
            pipeline=[dict(type='LoadImageFromFile'),
                      dict(type='LoadAnnotations', reduce_zero_label=True)])
        item = dataset[0]
    assert len(dataset) == 4
    raw = np.asarray(Image.open(item['seg_map_path']))
    assert raw.max() <= 150 and (raw == 0).any() and (raw > 0).any()
    reduced = item['gt_seg_map']
    assert (reduced[raw == 0] == 255).all()
    assert (reduced[raw > 0] == raw[raw > 0] - 1).all()
    assert reduced.shape == item['img'].shape[:2]


def test_imagenet_folder_loads_in_mmpretrain(imagenet_root):
    from mmpretrain.datasets import ImageNet
    dataset = ImageNet(data_root=imagenet_root, split='train',
                       classes=osp.join(imagenet_root, 'meta', 'classes.txt'),
                       pipeline=[])
    assert len(dataset) == 12
    assert dataset.CLASSES == tuple(f'n{c:08d}' for c in range(4))
    labels = sorted({dataset.get_data_info(i)['gt_label']
                     for i in range(len(dataset))})
    assert labels == [0, 1, 2, 3]
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        wnid = osp.basename(osp.dirname(info['img_path']))
        assert int(wnid[1:]) == info['gt_label']
    val = ImageNet(data_root=imagenet_root, split='val', pipeline=[])
    assert len(val) == 4


def test_cli_writes_each_format(tmp_path):
    from mmsparx.datasets.__main__ import main
    main(['coco', str(tmp_path / 'c'), '--num-train', '2', '--num-val', '1',
          '--size', '64', '80'])
    with open(tmp_path / 'c' / 'annotations' / 'instances_train.json') as f:
        data = json.load(f)
    assert len(data['images']) == 2 and data['images'][0]['width'] == 80
    main(['ade20k', str(tmp_path / 'a'), '--num-train', '1', '--num-val',
          '1', '--num-classes', '5'])
    label = np.asarray(Image.open(
        tmp_path / 'a' / 'annotations' / 'training' / 'ADE_train_00000001.png'))
    assert label.max() <= 5
    main(['imagenet', str(tmp_path / 'i'), '--num-classes', '2',
          '--num-train', '1', '--num-val', '1'])
    assert sorted(os.listdir(tmp_path / 'i' / 'train')) == [
        'n00000000', 'n00000001']
