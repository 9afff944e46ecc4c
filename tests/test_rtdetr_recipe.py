"""RT-DETR's training recipe: the optimizer's groups, learning rates and
decay, the warm-up, the EMA with the official decay, the recipe's values."""
from __future__ import annotations

import math

import pytest
import torch
from mmengine.config import Config
from torch import nn

import mmsparx  # noqa: F401  (registers the lazy mmdet models)
from test_rtdetr_data import RECIPE_CFG, mmdet_scope


class ToyDetector(nn.Module):
    """Module names as mmdet's detector: backbone / neck / bbox_head, with
    convs, norms, biases, attention and an embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False),
                                      nn.BatchNorm2d(4),
                                      nn.Conv2d(4, 4, 1))
        self.neck = nn.ModuleDict(dict(
            input_proj=nn.Sequential(nn.Conv2d(4, 8, 1, bias=False),
                                     nn.BatchNorm2d(8)),
            attn=nn.MultiheadAttention(8, 2, batch_first=True),
            norm1=nn.LayerNorm(8)))
        self.bbox_head = nn.ModuleDict(dict(
            enc_output=nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8)),
            score=nn.Linear(8, 3),
            denoising_class_embed=nn.Embedding(4, 8, padding_idx=3)))


def test_optimizer_groups_lr_and_decay():
    from mmengine.optim import build_optim_wrapper
    cfg = Config.fromfile(RECIPE_CFG)
    model = ToyDetector()
    with mmdet_scope():
        wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    optimizer = wrapper.optimizer
    assert type(optimizer).__name__ == 'AdamW'
    assert optimizer.defaults['betas'] == (0.9, 0.999)
    assert wrapper.clip_grad_kwargs == dict(max_norm=0.1, norm_type=2)
    by_param = {}
    for group in optimizer.param_groups:
        for p in group['params']:
            by_param[id(p)] = (group['lr'], group['weight_decay'])
    got = {name: by_param[id(p)] for name, p in model.named_parameters()}
    assert len(got) == len(list(model.parameters()))
    bb, lr = 1e-5, 1e-4
    expected = {
        # backbone x0.1; its norms and biases keep wd (custom key wins,
        # see rtdetr_72e.py; the official R18/R34 give its norms 0)
        'backbone.0.weight': (bb, 1e-4),
        'backbone.1.weight': (bb, 1e-4),
        'backbone.1.bias': (bb, 1e-4),
        'backbone.2.weight': (bb, 1e-4),
        'backbone.2.bias': (bb, 1e-4),
        'neck.input_proj.0.weight': (lr, 1e-4),
        'neck.input_proj.1.weight': (lr, 0.0),
        'neck.input_proj.1.bias': (lr, 0.0),
        'neck.attn.in_proj_weight': (lr, 1e-4),
        'neck.attn.in_proj_bias': (lr, 0.0),
        'neck.attn.out_proj.weight': (lr, 1e-4),
        'neck.attn.out_proj.bias': (lr, 0.0),
        'neck.norm1.weight': (lr, 0.0),
        'neck.norm1.bias': (lr, 0.0),
        'bbox_head.enc_output.0.weight': (lr, 1e-4),
        'bbox_head.enc_output.0.bias': (lr, 0.0),
        'bbox_head.enc_output.1.weight': (lr, 0.0),
        'bbox_head.enc_output.1.bias': (lr, 0.0),
        'bbox_head.score.weight': (lr, 1e-4),
        'bbox_head.score.bias': (lr, 0.0),
        'bbox_head.denoising_class_embed.weight': (lr, 1e-4),
    }
    assert set(got) == set(expected)
    for name, (want_lr, want_wd) in expected.items():
        assert got[name][0] == pytest.approx(want_lr, rel=1e-12), name
        assert got[name][1] == pytest.approx(want_wd, abs=1e-15), name


@pytest.mark.filterwarnings('ignore:Detected call of `scheduler.step')
def test_warm_up_then_constant():
    """The schedule alone (no optimizer steps): 0.001 x lr, linear to lr,
    then constant."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import PARAM_SCHEDULERS
    cfg = Config.fromfile(RECIPE_CFG)
    model = ToyDetector()
    with mmdet_scope():
        wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
        (scheduler, ) = [PARAM_SCHEDULERS.build(dict(s, optimizer=wrapper))
                         for s in cfg.param_scheduler]
    target = model.bbox_head.score.weight
    (head, ) = [g for g in wrapper.param_groups
                if any(p is target for p in g['params'])]

    def lr_now():
        return head['lr']

    assert lr_now() == pytest.approx(1e-7)  # 1e-4 * 0.001
    lrs = {}
    for it in range(1, 3001):
        scheduler.step()
        if it in (1000, 1999, 2000, 3000):
            lrs[it] = lr_now()
    # mmengine's LinearLR spans end - begin - 1 = 1999 steps:
    # 1e-4 * (0.001 + 0.999 * 1000 / 1999)
    assert lrs[1000] == pytest.approx(5.007498749374687e-05, rel=1e-6)
    assert lrs[1999] == pytest.approx(1e-4, rel=1e-9)
    assert lrs[2000] == pytest.approx(1e-4, rel=1e-9)
    assert lrs[3000] == pytest.approx(1e-4, rel=1e-9)


def official_decay(updates: int) -> float:
    """src/optim/ema.py: decay * (1 - exp(-updates / warmups))."""
    return 0.9999 * (1 - math.exp(-updates / 2000))


def test_official_decay_formula_by_hand():
    for updates, value in ((1, 0.000499825033328626),
                           (2, 0.0009994002166083156),
                           (2000, 0.6320573467726748),
                           (10000, 0.9931627267956145)):
        assert official_decay(updates) == pytest.approx(value, rel=1e-12)


def test_ema_matches_the_official_decay_and_keeps_int_buffers():
    from mmdet.registry import MODELS
    cfg = Config.fromfile(RECIPE_CFG)
    (hook, ) = [h for h in cfg.custom_hooks if h['type'] == 'EMAHook']
    assert hook['ema_type'] == 'ExpMomentumEMA'
    assert hook['update_buffers'] is True
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.BatchNorm1d(1))
    with mmdet_scope():
        ema = MODELS.build(dict(type=hook['ema_type'], model=model,
                                momentum=hook['momentum'],
                                gamma=hook['gamma'],
                                update_buffers=hook['update_buffers']))
    weight, bn = model[0].weight, model[1]
    for updates, decay in ((2, 0.0009994002166083156),
                           (2000, 0.6320573467726748),
                           (10000, 0.9931627267956145)):
        # first update copies: the average holds 1, the BN mean 1, the
        # integer counter 5
        ema.steps.zero_()
        with torch.no_grad():
            weight.fill_(1.0)
        bn.running_mean.fill_(1.0)
        bn.num_batches_tracked.fill_(5)
        ema.update_parameters(model)
        # the `updates`-th update, with the model at 0: average = decay
        ema.steps.fill_(updates - 1)
        with torch.no_grad():
            weight.zero_()
        bn.running_mean.zero_()
        bn.num_batches_tracked.fill_(100)
        ema.update_parameters(model)
        averaged = ema.module
        assert averaged[0].weight.item() == pytest.approx(decay, rel=1e-5)
        assert averaged[0].weight.item() == pytest.approx(
            official_decay(updates), rel=1e-5)
        assert averaged[1].running_mean.item() == pytest.approx(decay,
                                                                rel=1e-5)
        # integer buffers are not averaged (nor by the official)
        assert averaged[1].num_batches_tracked.dtype == torch.long
        assert averaged[1].num_batches_tracked.item() == 5


def test_recipe_values():
    cfg = Config.fromfile(RECIPE_CFG)
    assert cfg.default_scope == 'mmdet'
    assert cfg.custom_imports == dict(imports=['mmsparx'],
                                      allow_failed_imports=False)
    assert cfg.train_cfg.type == 'EpochBasedTrainLoop'
    assert cfg.train_cfg.max_epochs == 72 and cfg.train_cfg.val_interval == 1
    assert cfg.auto_scale_lr == dict(enable=False, base_batch_size=16)
    (warmup, ) = cfg.param_scheduler
    assert (warmup.type, warmup.start_factor, warmup.by_epoch, warmup.begin,
            warmup.end) == ('LinearLR', 0.001, False, 0, 2000)
    assert cfg.default_hooks.checkpoint.type == 'SafeCheckpointHook'
    assert cfg.default_hooks.checkpoint.interval == 1
    assert cfg.default_hooks.logger.type == 'LoggerHook'
    types = [h['type'] for h in cfg.custom_hooks]
    assert types == ['EMAHook', 'RandomStateHook', 'FiniteCheckHook']
    hook = cfg.custom_hooks[0]
    assert (hook.momentum, hook.gamma, hook.priority) == (1e-4, 2000, 49)
