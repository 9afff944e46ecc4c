"""tools/analysis_tools/maskrcnn_comparison.py: the table and the comparison
picture from the runs' demo_summary.json and scalars.json."""
import json
import sys
import os.path as osp

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis_tools'))

import maskrcnn_comparison as comparison  # noqa: E402


def fake_run(root, name, bbox, losses):
    folder = root / name / '20261204_120000' / 'vis_data'
    folder.mkdir(parents=True)
    rows = [dict(loss=1.0 + v, loss_cls=v, iter=i + 1, step=i + 1)
            for i, v in enumerate(losses)]
    rows.append({'coco/bbox_mAP': bbox, 'coco/segm_mAP': bbox / 2,
                 'step': 12})
    (folder / 'scalars.json').write_text(
        ''.join(json.dumps(r) + '\n' for r in rows))
    metrics = {'coco/bbox_mAP': bbox, 'coco/bbox_mAP_50': 2 * bbox,
               'coco/segm_mAP': bbox / 2, 'coco/segm_mAP_50': bbox}
    (root / name / 'demo_summary.json').write_text(json.dumps(dict(
        config=comparison.RUNS[name][0], wall_s=10, train_s=9,
        metrics=metrics)))


def test_table_and_picture(tmp_path):
    fake_run(tmp_path, 'r18', 0.25, [1.0, 0.5])
    fake_run(tmp_path, 'sparx_small_ln', 0.004, [1.0, 0.9])
    names = list(comparison.RUNS)
    table = comparison.table(names, str(tmp_path)).splitlines()
    # Header, rule, and one row per run that has a result, in RUNS order.
    assert len(table) == 4
    r18, ln = table[2].split(' | '), table[3].split(' | ')
    assert r18[0] == '| r18' and ln[0] == '| sparx_small_ln'
    assert r18[2:7] == ['11.18', '0.250', '0.500', '0.125', '0.250']
    assert ln[2] == '4.45' and ln[3] == '0.004'
    out = tmp_path / 'comparison.png'
    comparison.draw_comparison(names, str(tmp_path), str(out))
    assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
