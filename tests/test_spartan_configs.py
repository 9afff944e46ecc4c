"""The SpaRTAN configs train on generated data with the real runners: the
configs as shipped, but for data paths, image sizes and worker counts."""
import os.path as osp

import torch
from mmengine.config import Config

from conftest import ROOT, coco_paper_options, load_test_config
from mmsparx.cli import build_runner, prepare_device
from test_sparx_configs import SMALL_DET

CONFIGS = osp.join(ROOT, 'configs')


def no_workers(cfg) -> None:
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].update(num_workers=0, persistent_workers=False)


def finite_loss(runner) -> float:
    loss = runner.message_hub.get_scalar('train/loss').current()
    assert torch.isfinite(torch.tensor(loss)), loss
    return loss


def test_maskrcnn_spartan_t_1x_trains_two_iterations(coco_root, tmp_path):
    config = osp.join(CONFIGS, 'maskrcnn_spartan_t_1x.py')
    options = coco_paper_options(coco_root)
    options.pop('train_dataloader.dataset.pipeline.2.scale')
    cfg = load_test_config(config, options, tmp_path)
    cfg.train_dataloader.dataset.pipeline = SMALL_DET
    no_workers(cfg)
    runner = build_runner(cfg, config, prepare_device(cfg))
    backbone = runner.model.backbone
    assert type(backbone).__name__ == 'SpaRTAN'
    assert backbone.out_indices == (0, 1, 2, 3) and backbone.norm_eval
    runner.train()
    assert runner.iter == 2
    finite_loss(runner)
    assert 'val/coco/segm_mAP' in runner.message_hub.log_scalars
    # norm_eval: the backbone's BatchNorms kept their statistics.
    bn = backbone.stages[0].blocks[0].smixer.h_conv.norm
    assert not bn.training and int(bn.num_batches_tracked) == 0


def test_upernet_spartan_t_160k_trains_two_iterations(ade_root, tmp_path):
    config = osp.join(CONFIGS, 'upernet_spartan_t_160k_ade20k.py')
    options = {
        'model.backbone.init_cfg': None,
        'train_cfg.max_iters': 2, 'train_cfg.val_interval': 2,
        'default_hooks.checkpoint.interval': 2,
        'default_hooks.logger.interval': 1,
        'model.data_preprocessor.size': (96, 96),
    }
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        options[f'{loader}.dataset.data_root'] = ade_root
    cfg = load_test_config(config, options, tmp_path)
    cfg.train_dataloader.dataset.pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', reduce_zero_label=True),
        dict(type='RandomResize', scale=(320, 96), ratio_range=(0.5, 2.0),
             keep_ratio=True),
        dict(type='RandomCrop', crop_size=(96, 96), cat_max_ratio=0.75),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PhotoMetricDistortion'),
        dict(type='PackSegInputs'),
    ]
    test_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=(320, 96), keep_ratio=True),
        dict(type='LoadAnnotations', reduce_zero_label=True),
        dict(type='PackSegInputs'),
    ]
    cfg.val_dataloader.dataset.pipeline = test_pipeline
    cfg.test_dataloader.dataset.pipeline = test_pipeline
    no_workers(cfg)
    changes = prepare_device(cfg)
    if not torch.cuda.is_available():
        assert 'sync_bn: torch -> None' in changes
    runner = build_runner(cfg, config, changes)
    assert type(runner.model.backbone).__name__ == 'SpaRTAN'
    runner.train()
    assert runner.iter == 2
    finite_loss(runner)
    assert 'val/mIoU' in runner.message_hub.log_scalars


def test_imagenet_config_trains_two_iterations(imagenet_root, tmp_path):
    config = osp.join(CONFIGS, 'spartan', 'spartan-xt_16xb128_in1k.py')
    cfg = load_test_config(config, None, tmp_path)
    small = [dict(type='LoadImageFromFile'),
             dict(type='RandomResizedCrop', scale=64),
             dict(type='PackInputs')]
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].update(batch_size=6)
        cfg[loader].dataset.update(
            data_root=imagenet_root, pipeline=small,
            classes=osp.join(imagenet_root, 'meta', 'classes.txt'))
    no_workers(cfg)
    cfg.model.head.num_classes = 4
    cfg.data_preprocessor.num_classes = 4
    cfg.train_cfg.max_epochs = 1
    cfg.param_scheduler = [dict(type='LinearLR', start_factor=1e-3,
                                by_epoch=True, end=1,
                                convert_to_iter_based=True)]
    cfg.val_evaluator = dict(type='Accuracy', topk=(1, ))
    cfg.test_evaluator = cfg.val_evaluator
    runner = build_runner(cfg, config, prepare_device(cfg))
    assert runner.model.backbone.arch['channels'] == (32, 64, 96, 192)
    runner.train()
    assert runner.iter == 2  # 12 images, batch 6
    finite_loss(runner)
    assert 'val/accuracy/top1' in runner.message_hub.log_scalars


def test_configs_name_the_recipes():
    def load(*parts):
        return Config.fromfile(osp.join(CONFIGS, *parts))

    for size, (train, resize) in {224: (224, 256), 256: (256, 292)}.items():
        for variant, width in (('t', 256), ('xt', 192)):
            name = f'spartan-{variant}_16xb128_in1k' + (
                '.py' if size == 224 else f'-{size}px.py')
            cfg = load('spartan', name)
            assert cfg.model.backbone.arch == variant
            assert cfg.model.backbone.out_norm is None
            assert cfg.model.head.in_channels == width
            pipeline = cfg.train_dataloader.dataset.pipeline
            assert pipeline[1].scale == train
            assert pipeline[3].magnitude_level == 7
            test = cfg.test_dataloader.dataset.pipeline
            assert test[1].scale == resize and test[2].crop_size == train
            assert cfg.optim_wrapper.optimizer.lr == 2.5e-3
            assert cfg.optim_wrapper.optimizer.weight_decay == 0.03
            assert cfg.train_cfg.max_epochs == 300
            assert cfg.param_scheduler[0].end == 20
            assert cfg.model.train_cfg.augments[0].alpha == 0.2
            assert cfg.auto_scale_lr.base_batch_size == 2048
    det = load('maskrcnn_spartan_t_1x.py')
    assert det.model.neck.in_channels == [32, 64, 128, 256]
    assert det.optim_wrapper.optimizer.lr == 1e-4
    assert det.param_scheduler[1].milestones == [8, 11]
    assert det.train_cfg.max_epochs == 12
    seg = load('upernet_spartan_t_160k_ade20k.py')
    assert seg.model.decode_head.in_channels == [32, 64, 128, 256]
    assert seg.model.auxiliary_head.in_channels == 128
    assert seg.model.auxiliary_head.loss_decode.loss_weight == 0.4
    assert seg.optim_wrapper.optimizer.lr == 6e-5
    assert seg.train_cfg.max_iters == 160000
    assert seg.crop_size == (512, 512)
