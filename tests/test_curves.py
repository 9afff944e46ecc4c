"""The demo's training-curve picture, from mmengine's scalars.json rows."""
import json

import pytest

from mmsparx.visualization.curves import draw_curves, read_curves, scalars_file

ROWS = [
    {'lr': 1e-4, 'loss': 3.0, 'loss_cls': 2.0, 'loss_mask': 1.0,
     'd0.loss_cls': 2.5, 'acc': 50.0, 'epoch': 1, 'iter': 4, 'step': 4},
    {'lr': 1e-4, 'loss': 2.0, 'loss_cls': 1.5, 'loss_mask': 0.5,
     'd0.loss_cls': 2.0, 'acc': 60.0, 'epoch': 1, 'iter': 8, 'step': 8},
    {'coco/bbox_mAP': 0.1, 'coco/bbox_mAP_50': 0.3, 'coco/segm_mAP': 0.05,
     'step': 1},
    {'lr': 1e-4, 'loss': 1.5, 'loss_cls': 1.0, 'loss_mask': 0.5,
     'd0.loss_cls': 1.0, 'acc': 70.0, 'epoch': 2, 'iter': 12, 'step': 12},
    {'coco/bbox_mAP': 0.25, 'coco/bbox_mAP_50': 0.5, 'coco/segm_mAP': 0.2,
     'step': 2},
]


def write_run(work_dir, stamp: str) -> str:
    folder = work_dir / stamp / 'vis_data'
    folder.mkdir(parents=True)
    path = folder / 'scalars.json'
    path.write_text(''.join(json.dumps(r) + '\n' for r in ROWS))
    return str(path)


def test_reads_loss_per_iteration_and_map_per_epoch(tmp_path):
    write_run(tmp_path, '20261130_100000')
    newest = write_run(tmp_path, '20261130_110000')
    assert scalars_file(str(tmp_path)) == newest
    curves = read_curves(newest)
    # Every top-level loss term; not accuracy, not per-layer copies.
    assert set(curves) == {'loss', 'loss_cls', 'loss_mask', 'coco/bbox_mAP',
                           'coco/segm_mAP'}
    assert curves['loss'] == [(4, 3.0), (8, 2.0), (12, 1.5)]
    assert curves['loss_mask'] == [(4, 1.0), (8, 0.5), (12, 0.5)]
    assert curves['coco/bbox_mAP'] == [(1, 0.1), (2, 0.25)]
    assert curves['coco/segm_mAP'] == [(1, 0.05), (2, 0.2)]
    assert read_curves(newest, ['coco/bbox_mAP_50'])['coco/bbox_mAP_50'] == [
        (1, 0.3), (2, 0.5)]


def test_draws_a_png(tmp_path):
    curves = read_curves(write_run(tmp_path, 'run'))
    out = tmp_path / 'curves.png'
    draw_curves(curves, str(out), title='demo')
    assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_no_run_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match='LocalVisBackend'):
        scalars_file(str(tmp_path))
