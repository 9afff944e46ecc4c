"""Defect 1 of issue 24 (data and weights): the headline command without
COCO ended in a worker's FileNotFoundError 860 lines down, and without the
ImageNet file in "does not exist" with no word on where it comes from.
Now tools/train.py (and ``python -m mmsparx.datasets preflight``, which
tools/dist_train.sh runs) stop in seconds with one paragraph."""
import os
import os.path as osp
import subprocess
import sys

from conftest import ROOT

COCO_3X = osp.join(ROOT, 'configs', 'maskrcnn_sparx_t_3x.py')
UPERNET = osp.join(ROOT, 'configs', 'sparx',
                   'upernet_sparx-mamba-t_8xb2-160k_ade20k-512x512.py')


def run(args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=ROOT)
    return subprocess.run([sys.executable] + args, cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def coco_2017_layout(cwd):
    """The generated set under data/coco/ with COCO 2017's names."""
    from mmsparx.datasets import generate_coco
    root = osp.join(cwd, 'data', 'coco')
    generate_coco(root, num_train=1, num_val=1, size=(32, 32))
    for split in ('train', 'val'):
        os.rename(osp.join(root, split), osp.join(root, f'{split}2017'))
        ann = osp.join(root, 'annotations', f'instances_{split}')
        os.rename(ann + '.json', ann + '2017.json')


def test_train_without_coco_says_where_it_goes(tmp_path):
    result = run([osp.join(ROOT, 'tools', 'train.py'), COCO_3X], tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    err = result.stderr
    assert 'Traceback' not in err, err[-3000:]
    assert 'the COCO data root data/coco/' in err
    assert 'annotations/instances_train2017.json' in err  # the layout
    assert 'ln -s /path/to/coco data/coco' in err
    assert ('--cfg-options train_dataloader.dataset.data_root=/path/to/coco/'
            in err)
    assert 'val_evaluator.ann_file=/path/to/coco/annotations/' in err


def test_train_with_coco_without_weights_names_the_converter(tmp_path):
    coco_2017_layout(str(tmp_path))
    result = run([osp.join(ROOT, 'tools', 'train.py'), COCO_3X], tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    err = result.stderr
    assert 'Traceback' not in err, err[-3000:]
    assert 'checkpoints/sparx_mamba_t_in1k.pth, which does not exist' in err
    assert 'sparx_mamba_tiny_in1k.pth' in err  # the authors' file
    assert ('python tools/model_converters/sparx_mamba.py '
            'sparx_mamba_tiny_in1k.pth checkpoints/sparx_mamba_t_in1k.pth'
            in err)
    assert 'configs/sparx/README.md' in err


def test_preflight_upernet_ade20k_data_then_weights(tmp_path):
    from mmsparx.datasets import generate_ade20k
    args = ['-m', 'mmsparx.datasets', 'preflight', UPERNET, '4',
            '--launcher', 'pytorch']  # dist_train.sh's arguments
    result = run(args, tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert 'the ADE20K data root data/ade/ADEChallengeData2016/' in \
        result.stderr
    assert 'images/training/' in result.stderr
    assert ('ln -s /path/to/ADEChallengeData2016 '
            'data/ade/ADEChallengeData2016') in result.stderr
    generate_ade20k(str(tmp_path / 'ade'), num_train=1, num_val=1,
                    size=(32, 32), num_classes=3)
    root = f'{tmp_path}/ade/'
    result = run(args + ['--cfg-options',
                         f'train_dataloader.dataset.data_root={root}',
                         f'val_dataloader.dataset.data_root={root}'],
                 tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert 'data is not where' not in result.stderr
    assert 'tools/model_converters/sparx_mamba.py' in result.stderr


def test_checks_pass_when_everything_is_there(tmp_path, monkeypatch):
    from mmsparx.utils.cli import load_config
    from mmsparx.datasets.preflight import check_data, check_weights
    coco_2017_layout(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    cfg = load_config(COCO_3X, None, 'none', str(tmp_path / 'work'))
    assert check_data(cfg, ('train', 'val', 'test')) is None
    note = check_weights(cfg)
    assert 'sparx_mamba_t_in1k' in note
    # The command that fetches and converts the published file.
    assert ('python tools/model_converters/download.py '
            'sparx_mamba_tiny_in1k.pth --out '
            'checkpoints/sparx_mamba_t_in1k.pth' in note), note
    cfg.model.backbone.init_cfg = None
    assert check_weights(cfg) is None
