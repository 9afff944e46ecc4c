"""A whole-model checkpoint (``load_from``, ``tools/test.py CONFIG CKPT``,
resume) must fill the model: a file that leaves keys unfilled or of another
shape is refused before anything runs, in one paragraph naming what the file
is and what fits; ``--partial-load`` loads what fits and logs the counts."""
import glob
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch
from conftest import DEMO_DET, ROOT, coco_options, load_test_config

from mmsparx.fileio import CheckpointError
from tools import test as test_tool
from tools import train as train_tool

DEMO_SPARX = osp.join(ROOT, 'configs', 'demo',
                      'maskrcnn_sparx_t_fpn_shapes.py')
# A tool run as `python TOOL ARGS` runs it (its __main__ block, exit status
# and stderr), without yapf re-indenting the config text the runner prints
# (as in this suite's in-process runs: conftest.unformatted_config_text).
AS_SCRIPT = """
import runpy, sys
from mmengine.config import config
config.FormatCode = lambda text, **kwargs: (text, False)
tool = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(tool, run_name='__main__')
"""


def cli_options(root: str) -> list:
    """``--cfg-options`` for the demo configs on the generated set, tested
    on its first image only (what is checked is the loading)."""
    options = dict(coco_options(root),
                   **{'test_dataloader.dataset.indices': 1})
    words = []
    for key, value in options.items():
        if isinstance(value, tuple):
            value = '(' + ','.join(map(str, value)) + ')'
        words.append(f'{key}={value}')
    return ['--cfg-options', *words]


def refusal(main, argv) -> str:
    """The one paragraph ``main`` refuses with."""
    with pytest.raises(CheckpointError) as err:
        main(argv)
    message = str(err.value)
    assert '\n' not in message and len(message) < 1200, message
    assert '--partial-load' in message
    return message


def log_text(work_dir) -> str:
    return ''.join(open(f).read() for f in
                   glob.glob(osp.join(str(work_dir), '*', '*.log')))


@pytest.fixture(scope='module')
def demo_state(coco_root, tmp_path_factory):
    """The demo detector's own weights, as tools/train.py saves them (its
    model as the Runner builds it)."""
    from mmsparx.apis import build_model
    from mmsparx.deploy import restored_default_scope
    work_dir = tmp_path_factory.mktemp('build')
    cfg = load_test_config(DEMO_DET, coco_options(coco_root), work_dir)
    with restored_default_scope():
        model = build_model(cfg)
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_matching_file_is_tested(coco_root, demo_state, tmp_path):
    path = tmp_path / 'epoch_1.pth'
    torch.save({'state_dict': demo_state, 'meta': {}}, path)
    test_tool.main([
        DEMO_DET,
        str(path), '--work-dir',
        str(tmp_path / 'w'), *cli_options(coco_root)
    ])
    log = log_text(tmp_path / 'w')
    total = sum(not k.endswith('num_batches_tracked') for k in demo_state)
    assert f'checkpoint {path} fills all {total} keys of the MaskRCNN' in log
    assert 'do not match exactly' not in log


def test_random_dict_is_refused_then_partially_loaded(coco_root, demo_state,
                                                      tmp_path):
    path = tmp_path / 'random.pth'
    torch.save({'foo.weight': torch.randn(3, 3), 'bar': torch.randn(2)}, path)
    # BN's batch counters are not needed
    total = sum(not k.endswith('num_batches_tracked') for k in demo_state)
    message = refusal(test_tool.main, [DEMO_DET, str(path), '--work-dir',
                                       str(tmp_path / 'a'),
                                       *cli_options(coco_root)])
    assert f'it would fill 0 of its {total} keys' in message, message
    assert 'holds 2 tensors (foo. 1, bar 1)' in message, message
    # The same file through training's load_from.
    refusal(train_tool.main, [
        DEMO_DET, '--work-dir',
        str(tmp_path / 'b'), *cli_options(coco_root), f'load_from={path}'
    ])
    assert not glob.glob(str(tmp_path / 'b' / '*.pth'))  # no step ran
    test_tool.main([DEMO_DET, str(path), '--partial-load', '--work-dir',
                    str(tmp_path / 'c'), *cli_options(coco_root)])
    assert (f"--partial-load: checkpoint {path} into MaskRCNN: loaded 0 of "
            f"the model's {total} keys; missing {total}, unexpected 2, "
            'mismatched 0.') in log_text(tmp_path / 'c')


def test_backbone_file_via_load_from_names_init_cfg(coco_root, demo_state,
                                                    tmp_path):
    classifier = {k: v for k, v in demo_state.items()
                  if k.startswith('backbone.')}
    classifier['head.fc.weight'] = torch.zeros(10, 512)
    path = tmp_path / 'resnet18_in1k.pth'
    torch.save({'state_dict': classifier}, path)
    message = refusal(train_tool.main, [DEMO_DET, '--work-dir', str(tmp_path),
                                        *cli_options(coco_root),
                                        f'load_from={path}'])
    assert "It is a backbone's weights" in message, message
    assert (f'model.backbone.init_cfg.type=Pretrained model.backbone.'
            f'init_cfg.checkpoint={path} model.backbone.init_cfg.prefix='
            'backbone. load_from=None)') in message, message


def test_sparx_s_file_into_t_config_names_both(coco_root, demo_state,
                                               tmp_path):
    from mmsparx.models.backbones import SparXMamba
    small = SparXMamba('small', out_indices=(0, 1, 2, 3), out_norm='ln')
    state = {k: v for k, v in demo_state.items()
             if not k.startswith('backbone.')}
    state.update({'backbone.' + k: v for k, v in small.state_dict().items()})
    path = tmp_path / 'maskrcnn_sparx_mamba_s.pth'
    torch.save({'state_dict': state}, path)
    message = refusal(test_tool.main, [DEMO_SPARX, str(path), '--work-dir',
                                       str(tmp_path / 'a'),
                                       *cli_options(coco_root)])
    assert 'a SparX-Mamba-S model (mmsparx layout)' in message, message
    assert "backbone is SparX-Mamba-T" in message, message
    assert "type='SparXMamba', arch='small'" in message, message
    # Keys of another shape are skipped, not copied, under --partial-load.
    test_tool.main([DEMO_SPARX, str(path), '--partial-load', '--work-dir',
                    str(tmp_path / 'b'), *cli_options(coco_root)])
    counts = re.search(r'--partial-load: checkpoint \S+ into MaskRCNN: loaded '
                       r'(\d+) of the model\'s (\d+) keys; missing (\d+), '
                       r'unexpected (\d+), mismatched (\d+)\.',
                       log_text(tmp_path / 'b'))
    assert counts, log_text(tmp_path / 'b')[-2000:]
    loaded, total, missing, _, mismatched = map(int, counts.groups())
    assert mismatched > 0 and missing > 0
    assert loaded == total - missing - mismatched > 0


def test_refusal_on_the_command_line(coco_root, tmp_path):
    # The paragraph, exit status 2, no traceback burying it.
    path = tmp_path / 'random.pth'
    torch.save({'foo.weight': torch.zeros(2)}, path)
    result = subprocess.run(
        [sys.executable, '-c', AS_SCRIPT, 'tools/test.py', DEMO_DET,
         str(path), '--work-dir', str(tmp_path / 'w'),
         *cli_options(coco_root)], cwd=ROOT,
        capture_output=True, text=True, timeout=600,
        env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert result.returncode == 2, result.stderr[-3000:]
    assert 'Traceback' not in result.stderr, result.stderr[-3000:]
    assert 'error: checkpoint' in result.stderr and 'does not fit' in \
        result.stderr
