"""TrainStatsHook: per-part gradient norm, relative update and output std,
checked against the numbers computed by hand on a toy detector layout."""
from types import SimpleNamespace

import torch
from mmengine.logging import MessageHub
from torch import nn

from mmsparx.engine.hooks import TrainStatsHook
from mmsparx.engine.hooks.train_stats import group_of


class Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.stages = nn.ModuleList([nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1)])

    def forward(self, x):
        x = self.stem(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return tuple(outs)


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = Backbone()
        self.neck = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.neck(self.backbone(x)[-1]).square().mean()


def test_groups_follow_stages_and_heads():
    assert group_of('backbone.stages.2.blocks.0.op.A_logs') == \
        'backbone.stages.2'
    assert group_of('backbone.stem.0.weight') == 'backbone.stem'
    assert group_of('backbone.out_norms.0.weight') == 'backbone.out_norms'
    assert group_of('roi_head.bbox_head.fc_cls.weight') == \
        'roi_head.bbox_head'
    assert group_of('neck.fpn_convs.0.conv.weight') == 'neck'


def test_logs_grad_norm_update_and_output_std():
    torch.manual_seed(0)
    model = Toy()
    hub = MessageHub.get_instance('test_train_stats')
    runner = SimpleNamespace(model=model, iter=0, message_hub=hub)
    hook = TrainStatsHook(interval=1)
    hook.before_run(runner)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    seen = []
    model.backbone.register_forward_hook(lambda m, a, out: seen.extend(out))
    hook.before_train_iter(runner, 0)
    x = torch.randn(2, 3, 8, 8)
    loss = model(x)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    optimizer.step()
    hook.after_train_iter(runner, 0)

    def norm(prefix, tensors):
        return sum(t.pow(2).sum() for n, t in tensors.items()
                   if n.startswith(prefix)).sqrt().item()

    for group in ('backbone.stem', 'backbone.stages.0', 'backbone.stages.1',
                  'neck'):
        logged = hub.get_scalar(f'train/grad/{group}').current()
        assert abs(logged - norm(group + '.', grads)) < 1e-5 * (1 + logged)
        moved = {n: p.detach() - before[n]
                 for n, p in model.named_parameters()}
        expect = norm(group + '.', moved) / norm(group + '.', before)
        logged = hub.get_scalar(f'train/update/{group}').current()
        assert abs(logged - expect) < 1e-5 * (1 + expect)
        assert logged > 0
    assert len(seen) == 2
    for index, out in enumerate(seen):
        logged = hub.get_scalar(f'train/out_std/backbone.{index}').current()
        assert abs(logged - out.detach().std().item()) < 1e-6
    hook.after_run(runner)
    assert not hook._handles


def test_off_iterations_cost_nothing_and_log_nothing():
    model = Toy()
    hub = MessageHub.get_instance('test_train_stats_off')
    runner = SimpleNamespace(model=model, iter=1, message_hub=hub)
    hook = TrainStatsHook(interval=10)
    hook.before_run(runner)
    hook.before_train_iter(runner, 1)
    model(torch.randn(1, 3, 8, 8)).backward()
    hook.after_train_iter(runner, 1)
    assert 'train/grad/neck' not in hub.log_scalars
    hook.after_run(runner)
