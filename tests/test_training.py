"""Real runners on generated data: Mask R-CNN, UperNet, resume, 2-process
gloo launch, and the error a config without custom_imports gives. The
demo Mask R-CNN trains on 80x64 images; where the point is the loop or the
launch, not the detector, it is shrunk to a quarter of its widths
(``TINY``)."""
import glob
import os.path as osp
import pickle

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook

from conftest import (DEMO_DET, DEMO_SEG, NOT_SERIALISED, ROOT, as_cli,
                      coco_options, free_port, load_test_config, run_tool,
                      small_mask_rcnn)
from mmsparx.apis import build_runner, prepare_device, refusals_exit
from mmsparx.utils.cli import MissingImportError

# The images of coco_options at half the size.
SMALL_IMAGES = {
    'train_dataloader.dataset.pipeline.2.scale': (80, 64),
    'val_dataloader.dataset.pipeline.1.scale': (80, 64),
    'test_dataloader.dataset.pipeline.1.scale': (80, 64),
}
# The demo Mask R-CNN with a quarter of the channels everywhere.
TINY = {'model.backbone.base_channels': 16,
        **small_mask_rcnn([16, 32, 64, 128], fc_out=128)}


def small_coco(root: str, tiny: bool = False) -> dict:
    """``coco_options`` on 80x64 images; ``tiny``: with ``TINY``."""
    return dict(coco_options(root), **SMALL_IMAGES, **NOT_SERIALISED,
                **(TINY if tiny else {}))


def make_runner(config, options, work_dir, launcher='none'):
    cfg = load_test_config(config, options, work_dir, launcher)
    return build_runner(cfg, config, prepare_device(cfg))


def finite_loss(runner) -> float:
    loss = runner.message_hub.get_scalar('train/loss').current()
    assert torch.isfinite(torch.tensor(loss)), loss
    return loss


def test_maskrcnn_trains_two_iterations(coco_root, tmp_path):
    runner = make_runner(DEMO_DET, small_coco(coco_root), tmp_path)
    runner.train()
    assert runner.iter == 2 and runner.epoch == 1
    finite_loss(runner)
    # The val loop ran pycocotools' COCO metric on both image sets.
    metrics = runner.message_hub.log_scalars
    assert 'val/coco/bbox_mAP' in metrics and 'val/coco/segm_mAP' in metrics
    assert osp.isfile(tmp_path / 'epoch_1.pth')


def test_upernet_trains_two_iterations(ade_root, tmp_path):
    options = {
        'train_dataloader.dataset.data_root': ade_root,
        'val_dataloader.dataset.data_root': ade_root,
        'test_dataloader.dataset.data_root': ade_root,
        'train_cfg.max_iters': 2, 'train_cfg.val_interval': 2,
        'default_hooks.checkpoint.interval': 2,
        'default_hooks.logger.interval': 1,
        **NOT_SERIALISED,
    }
    runner = make_runner(DEMO_SEG, options, tmp_path)
    # SyncBN in the config became BN on this CPU machine.
    assert not any('SyncBatchNorm' in type(m).__name__
                   for m in runner.model.modules())
    runner.train()
    assert runner.iter == 2
    finite_loss(runner)
    assert 'val/mIoU' in runner.message_hub.log_scalars


class CrashAtIter(Hook):
    """Simulates a job killed in the middle of epoch 2."""

    def __init__(self, at: int):
        self.at = at

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter == self.at:
            raise KeyboardInterrupt('simulated crash')


def test_resume_after_interrupted_run(coco_root, tmp_path):
    options = dict(small_coco(coco_root, tiny=True), **{
        'train_cfg.max_epochs': 2, 'train_cfg.val_interval': 2})
    crashed = make_runner(DEMO_DET, options, tmp_path)
    crashed.register_hook(CrashAtIter(3))
    with pytest.raises(KeyboardInterrupt):
        crashed.train()
    saved = torch.load(tmp_path / 'epoch_1.pth', weights_only=False)
    assert saved['meta']['iter'] == 2

    from tools.train import main
    main([DEMO_DET, '--work-dir', str(tmp_path), '--resume',
          *as_cli(options)])
    with open(tmp_path / 'last_checkpoint') as f:
        last = f.read().strip()
    assert last.endswith('epoch_2.pth')
    final = torch.load(last, weights_only=False)
    assert final['meta']['epoch'] == 2 and final['meta']['iter'] == 4
    # The optimizer state came back from epoch 1 (AdamW step counts add up).
    steps = {int(s['step']) for s in final['optimizer']['state'].values()}
    assert steps == {4}

    # tools/test.py on the resumed checkpoint: metric, dump and pictures.
    from tools.test import main as test_main
    out = tmp_path / 'preds.pkl'
    test_main([DEMO_DET, last, '--work-dir', str(tmp_path), '--out',
               str(out), '--show-dir', 'vis', *as_cli(options)])
    with open(out, 'rb') as f:
        assert len(pickle.load(f)) == 2
    assert len(glob.glob(str(tmp_path / '*' / 'vis' / '*.jpg'))) == 2


def test_dist_train_two_gloo_processes(coco_root, tmp_path):
    options = small_coco(coco_root, tiny=True)
    result = run_tool(
        ['bash', 'tools/dist_train.sh', DEMO_DET, '2', '--work-dir',
         str(tmp_path), *as_cli(options)],
        env={'PORT': str(free_port())})
    assert result.returncode == 0, result.stdout[-3000:] + \
        result.stderr[-3000:]
    logs = glob.glob(str(tmp_path / '*' / '*.log'))
    assert len(logs) == 1
    with open(logs[0]) as f:
        log = f.read()
    assert 'Distributed launcher: pytorch' in log
    assert 'Distributed training: True' in log
    assert 'GPU number: 2' in log  # mmengine's name for the world size
    assert 'no CUDA: env_cfg.dist_cfg.backend: nccl -> gloo' in log
    assert 'no CUDA: model.backbone.norm_cfg.type: SyncBN -> BN' in log
    # 4 images, 2 per rank on 2 ranks: 1 iteration per epoch.
    assert 'Epoch(train) [1][1/1]' in log
    assert 'coco/bbox_mAP' in log
    assert osp.isfile(tmp_path / 'epoch_1.pth')


def test_missing_custom_imports_names_the_fix(coco_root, tmp_path):
    config = tmp_path / 'no_plugin.py'
    config.write_text(
        f"_base_ = [{DEMO_DET!r}]\n"
        "custom_imports = None\n"
        "model = dict(backbone=dict(_delete_=True, type='NoSuchBackbone'))\n")
    # The data exists (the data check would otherwise stop it first).
    # tools/train.py as its __main__ runs it: the error passes through
    # refusals_exit and ends the tool, its message the traceback's last line.
    from tools.train import main
    with pytest.raises(MissingImportError) as info:
        with refusals_exit():
            main([str(config), '--work-dir', str(tmp_path),
                  *as_cli(coco_options(coco_root))])
    message = str(info.value)
    assert "no imported package registers 'NoSuchBackbone' in mmdet" in \
        message
    assert "custom_imports = dict(imports=['<plugin>']" in message


def test_mmsparx_name_without_import_is_explained():
    from mmsparx.utils.cli import explain_build_error
    from mmsparx.registry import REGISTERED, register_model
    from test_registry import TinyNet
    register_model(TinyNet, name='MmsparxTinyNet')
    assert 'MmsparxTinyNet' in REGISTERED
    error = KeyError('class `MaskRCNN` in mmdet/models/detectors/mask_rcnn.py'
                     ': MmsparxTinyNet is not in the mmdet::model registry. '
                     'Please check whether the value of `MmsparxTinyNet` is '
                     'correct or it was registered as expected.')
    hint = explain_build_error(error, 'my.py')
    assert "'MmsparxTinyNet' is an mmsparx model" in hint
    assert "custom_imports = dict(imports=['mmsparx'], " \
        "allow_failed_imports=False)" in hint


def test_every_config_imports_mmsparx():
    for path in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'),
                          recursive=True):
        if '_base_' in path:
            continue
        cfg = Config.fromfile(path)
        assert cfg.custom_imports == dict(
            imports=['mmsparx'], allow_failed_imports=False), path
