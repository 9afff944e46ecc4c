"""The SpaRTAN configs' recipes. (Every config trains one iteration on
generated data and evaluates, with the real runners, in
test_config_matrix.py.)"""
import os.path as osp

from mmengine.config import Config

from conftest import ROOT

CONFIGS = osp.join(ROOT, 'configs')


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
