"""The SparseSwin configs with the real runners on generated data: the
ImageNet-100 classifier trains 2 iterations; the CIFAR configs (whose
datasets would download) build and feed 224 inputs. (Every config, the
Mask R-CNN and UperNet ones included, trains one iteration and evaluates in
test_config_matrix.py.)
"""
import glob
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config

from conftest import ROOT, load_test_config
from mmsparx.apis import build_runner, prepare_device

CONFIGS = osp.join(ROOT, 'configs', 'sparseswin')


def config_path(name: str) -> str:
    return osp.join(CONFIGS, name + '.py')


def small_loaders(cfg) -> None:
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].update(num_workers=0, persistent_workers=False)


def test_every_sparseswin_config_imports_mmsparx():
    paths = glob.glob(osp.join(CONFIGS, '*.py'))
    assert len(paths) == 5
    for path in paths:
        cfg = Config.fromfile(path)
        assert cfg.custom_imports == dict(
            imports=['mmsparx'], allow_failed_imports=False), path


def test_imagenet100_config_trains_two_iterations(imagenet_root, tmp_path):
    config = config_path('sparseswin-t_1xb22_in100')
    cfg = load_test_config(config, None, tmp_path)
    small_loaders(cfg)
    classes = osp.join(imagenet_root, 'meta', 'classes.txt')
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].batch_size = 6
        cfg[loader].dataset.update(data_root=imagenet_root, classes=classes)
    cfg.model.backbone.init_cfg = None  # no torchvision weights offline
    cfg.model.head.num_classes = 4
    cfg.data_preprocessor.num_classes = 4
    cfg.train_cfg.max_epochs = 1
    cfg.val_evaluator = dict(type='Accuracy', topk=(1, ))
    cfg.test_evaluator = cfg.val_evaluator
    runner = build_runner(cfg, config, prepare_device(cfg))
    model = runner.model
    assert type(model).__name__ == 'SparseSwinClassifier'
    assert type(model.attn_reg).__name__ == 'SparTaAttentionLoss'
    assert model.attn_reg.loss_weight == 1e-4 and model.attn_reg.mode == 'l2'
    runner.train()
    assert runner.iter == 2  # 12 images, batch 6
    scalars = runner.message_hub.log_scalars
    reg = scalars['train/loss_attn_reg'].current()
    assert 0 < reg < scalars['train/loss'].current()
    assert 'val/accuracy/top1' in scalars
    # The authors' freeze_12: embedding and stages 1-2 stayed frozen.
    assert not any(p.requires_grad for p in model.backbone.stages[1].blocks.
                   parameters())
    assert all(p.requires_grad for p in model.backbone.sparta.parameters())


@pytest.mark.parametrize('name,classes', [('sparseswin-t_1xb128_cifar10', 10),
                                          ('sparseswin-t_1xb128_cifar100', 100)])
def test_cifar_configs_build_and_feed_224_inputs(name, classes):
    from mmengine.dataset import Compose
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(config_path(name))
    dataset = cfg.train_dataloader.dataset
    assert dataset.type == name.split('_')[-1].upper()
    assert dataset.data_root == f'data/{name.split("_")[-1]}/'
    assert cfg.val_dataloader.dataset.split == 'test'
    assert cfg.optim_wrapper.optimizer == dict(type='AdamW', lr=5e-5,
                                               weight_decay=0.01)
    assert cfg.train_cfg.max_epochs == 100
    cfg.model.backbone.init_cfg = None
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        import mmpretrain.datasets  # noqa: F401  registers the transforms
        train = Compose(cfg.train_dataloader.dataset.pipeline)
        test = Compose(cfg.val_dataloader.dataset.pipeline)
        model = MODELS.build(dict(cfg.model,
                                  data_preprocessor=cfg.data_preprocessor))
    rng = np.random.default_rng(0)
    # A CIFAR sample as mmpretrain's CIFAR datasets give it: 32x32 RGB.
    samples = [dict(img=rng.integers(0, 255, (32, 32, 3), dtype=np.uint8),
                    gt_label=i, img_shape=(32, 32), ori_shape=(32, 32))
               for i in range(2)]
    packed = [train(dict(s)) for s in samples]
    assert packed[0]['inputs'].shape == (3, 224, 224)
    assert test(dict(samples[0]))['inputs'].shape == (3, 224, 224)
    assert model.head.fc.out_features == classes
    data = model.data_preprocessor(
        dict(inputs=[p['inputs'] for p in packed],
             data_samples=[p['data_samples'] for p in packed]), True)
    losses = model(**data, mode='loss')
    assert torch.isfinite(losses['loss'])
    assert losses['loss_attn_reg'].item() == 0.0  # lambda 0 on CIFAR
