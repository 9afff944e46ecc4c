"""Defect 6 of issue 24: bad annotations and broken images were dropped or
trained on without a word. Now ``python -m mmsparx.datasets check``
reports each planted defect, and the COCO configs' ``CheckedCocoDataset``
names every box it drops or clips and stops on a broken image by name."""
import json
import logging
import os.path as osp

import pytest

from conftest import DEMO_DET


def plant_defects(root: str) -> dict:
    """A generated COCO set with one of each defect in its train split."""
    from mmsparx.datasets import generate_coco
    generate_coco(root, num_train=6, num_val=1, size=(64, 64), seed=3)
    ann_file = osp.join(root, 'annotations', 'instances_train.json')
    with open(ann_file) as f:
        coco = json.load(f)
    base = dict(image_id=1, segmentation=[[1, 1, 9, 1, 9, 9]], area=40.0,
                iscrowd=0, category_id=1)
    coco['annotations'] += [
        dict(base, id=901, bbox=[5, 5, 0, 10]),            # zero width
        dict(base, id=902, bbox=[100, 100, 10, 10]),       # fully outside
        dict(base, id=903, bbox=[50, 10, 30, 20]),         # partly outside
        dict(base, id=904, bbox=[5, 5, 10, 10], category_id=77),  # unknown
    ]
    coco['images'].append(dict(id=99, file_name='ghost.jpg', width=64,
                               height=64))
    with open(ann_file, 'w') as f:
        json.dump(coco, f)
    img = osp.join(root, 'train')
    data = open(osp.join(img, '000001.jpg'), 'rb').read()
    open(osp.join(img, '000001.jpg'), 'wb').write(data[:len(data) // 3])
    open(osp.join(img, '000002.jpg'), 'wb').close()
    open(osp.join(img, '000003.jpg'), 'wb').write(b'not an image at all')
    return dict(truncated=osp.join(img, '000001.jpg'),
                empty=osp.join(img, '000002.jpg'),
                corrupt=osp.join(img, '000003.jpg'))


def options(root: str) -> list:
    return ['--cfg-options', f'train_dataloader.dataset.data_root={root}/',
            f'val_dataloader.dataset.data_root={root}/',
            f'test_dataloader.dataset.data_root={root}/']


def test_check_reports_every_planted_defect(tmp_path, capsys):
    from mmsparx.datasets.__main__ import main
    root = str(tmp_path / 'coco')
    plant_defects(root)
    with pytest.raises(SystemExit) as exit_info:
        main(['check', DEMO_DET] + options(root))
    assert exit_info.value.code == 1
    out = capsys.readouterr().out
    for problem in ('missing', 'empty', 'truncated', 'unreadable',
                    'degenerate', 'outside', 'partly_outside',
                    'unknown_category'):
        assert f'{problem}: ' in out, (problem, out)
    assert 'ghost.jpg' in out and '000002.jpg' in out
    assert 'annotation id 901' in out and 'annotation id 904' in out
    assert 'truncated: ' in out and '000001.jpg' in out


def build_train_set(root: str):
    import mmsparx  # noqa: F401  registers CheckedCocoDataset
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmdet.registry import DATASETS
    cfg = Config.fromfile(DEMO_DET)
    ds = cfg.train_dataloader.dataset
    ds.data_root = root + '/'
    with DefaultScope.overwrite_default_scope('mmdet'):
        return DATASETS.build(ds)


class _Lines(logging.Handler):
    """The log lines themselves: mmengine's stream handler may hold a
    stdout of an earlier test, so capturing stdout can miss them."""

    def __init__(self) -> None:
        super().__init__()
        self.lines = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_training_set_names_what_it_drops_and_clips(tmp_path):
    from mmengine.logging import MMLogger
    root = str(tmp_path / 'coco')
    plant_defects(root)
    logger = MMLogger.get_current_instance()
    grab = _Lines()
    logger.addHandler(grab)
    try:
        dataset = build_train_set(root)
    finally:
        logger.removeHandler(grab)
    text = '\n'.join(grab.lines)
    for ann_id, action in ((901, 'dropped'), (902, 'dropped'),
                           (903, 'clipped to the image'),
                           (904, 'dropped')):
        line = next((t for t in text.splitlines()
                     if f'annotation id {ann_id} ' in t), '')
        assert '000000.jpg' in line and action in line, text
    assert '3 dropped' in text  # the summary counts them
    infos = [dataset.get_data_info(i) for i in range(len(dataset))]
    first = next(d for d in infos if d['img_id'] == 1)
    boxes = [i['bbox'] for i in first['instances']]
    assert [50.0, 10.0, 64.0, 30.0] in boxes  # clipped, kept


@pytest.mark.parametrize('kind', ['truncated', 'empty'])
def test_broken_image_stops_with_its_name(tmp_path, kind):
    root = str(tmp_path / 'coco')
    files = plant_defects(root)
    dataset = build_train_set(root)
    index = next(i for i in range(len(dataset))
                 if dataset.get_data_info(i)['img_path'] == files[kind])
    with pytest.raises(Exception) as err:
        dataset[index]
    assert files[kind] in str(err.value)
