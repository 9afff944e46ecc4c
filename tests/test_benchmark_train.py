"""``benchmark.py --train``: the JSON names the mode, and the timed step
really trains (a benchmark of a step that updates nothing would time too
little: no backward, or an optimizer holding no parameters)."""
import json
import os
import sys

import pytest
import torch

from conftest import ROOT, run_tool

sys.path.insert(0, os.path.join(ROOT, 'tools', 'analysis_tools'))
import benchmark  # noqa: E402


def test_train_json_names_the_mode():
    result = run_tool(
        [sys.executable, 'tools/analysis_tools/benchmark.py', 'spartan-xt',
         '--train', '--batch', '2', '--input', '64', '64', '--runs', '1',
         '--warmup', '1', '--device', 'cpu', '--json'],
        timeout=300, env={'OMP_NUM_THREADS': '1'})
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(result.stdout)  # stdout is the JSON alone
    assert [row['name'] for row in rows] == ['spartan-xt']
    assert rows[0]['mode'] == 'train'
    assert rows[0]['img_per_s'] > 0


def test_inference_rows_say_inference():
    row = benchmark.measure('spartan-xt', 1, (32, 32), torch.device('cpu'),
                            amp=False, warmup=0, runs=1)
    assert row['mode'] == 'inference' and row['img_per_s'] > 0


def test_compiled_rows_compile_the_backbone_in_place():
    # State-dict keys unchanged (no ``_orig_mod.``), the compiling call
    # reported apart from the timed ones.
    model = benchmark.build_model('resnet-18')
    keys = list(model.state_dict())
    benchmark.compile_features(model)
    assert list(model.state_dict()) == keys
    assert model.backbone._compiled_call_impl is not None
    row = benchmark.measure('resnet-18', 1, (32, 32), torch.device('cpu'),
                            amp=False, warmup=0, runs=1, compiled=True)
    assert row['compiled'] and row['first_call_s'] > row['s_per_iter'] > 0


@pytest.mark.parametrize('amp', [False, True])
def test_train_step_updates_every_trained_parameter(amp):
    torch.manual_seed(0)
    from mmsparx.models.variants import build_classifier
    model = build_classifier('spartan-xt', num_classes=10).train()
    images, samples = benchmark.random_batch(model, 2, (64, 64),
                                             torch.device('cpu'))
    assert all(0 <= int(s.gt_label) < 10 for s in samples)
    optimizer = benchmark.make_optimizer(model)
    # Every parameter is handed to AdamW with the recipes' settings.
    assert isinstance(optimizer, torch.optim.AdamW)
    assert sum(len(g['params']) for g in optimizer.param_groups) == \
        len(list(model.parameters()))
    assert optimizer.defaults['weight_decay'] == 0.05
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    loss = benchmark.train_step(model, optimizer, images, samples, amp)
    assert torch.isfinite(loss) and loss.requires_grad is False
    changed = {k for k, p in model.named_parameters()
               if not torch.equal(before[k], p.detach())}
    with_grad = {k for k, p in model.named_parameters()
                 if p.grad is not None}
    assert 'head.fc.weight' in changed
    assert any(k.startswith('backbone.') for k in changed)
    assert with_grad and with_grad <= changed


# -- saved_mib_per_image: the bytes a forward keeps for backward -------------

def test_saved_bytes_are_exact_and_leave_parameters_out():
    from mmsparx.analysis import model_storages, saved_bytes
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
                                torch.nn.Linear(8, 3))
    x = torch.randn(5, 4)
    # Linear 1 saves its input (5x4); ReLU saves its output (5x8), which
    # Linear 2 saves again as its input: one storage, counted once. The
    # weights Linear 2 saves are parameters: left out.
    expected = 5 * 4 * 4 + 5 * 8 * 4
    assert saved_bytes(lambda: model(x).sum(),
                       model_storages(model)) == expected
    # Without the exclusion Linear 2's weight (3x8) counts too (Linear 1's
    # is not saved: its input needs no gradient).
    assert saved_bytes(lambda: model(x).sum()) == expected + 3 * 8 * 4


def test_saved_bytes_count_a_storage_once_through_views():
    from mmsparx.analysis import saved_bytes
    a = torch.randn(6, requires_grad=True)
    # mul saves both operands: two views of one 24-byte storage.
    assert saved_bytes(lambda: (a.view(2, 3) * a.view(3, 2).t()).sum()) == 24
    assert saved_bytes(lambda: a.detach() * 2) == 0  # nothing needs grad


def test_train_rows_give_saved_memory_per_image():
    row = benchmark.measure('spartan-xt', 1, (64, 64), torch.device('cpu'),
                            amp=True, warmup=0, runs=1, train=True)
    assert row['amp'] == 'bfloat16'
    assert row['saved_mib_per_image'] > row['saved_mib_slope'] > 0
    # total at batch 2 = fixed + 2 x slope
    assert row['saved_mib_fixed'] == pytest.approx(
        2 * row['saved_mib_per_image'] - 2 * row['saved_mib_slope'],
        abs=0.02)


def test_ops_are_counted_with_the_profiler():
    row = benchmark.measure('spartan-xt', 1, (32, 32), torch.device('cpu'),
                            amp=False, warmup=0, runs=1, ops=True)
    assert row['aten_ops'] > row['aten_ops_top'] > 10


# -- timm:NAME baselines (timm is not installed here: a stand-in) ------------

class FakeTimmNet(torch.nn.Module):
    def __init__(self, num_classes=7, features_only=False):
        super().__init__()
        self.num_classes, self.features_only = num_classes, features_only
        self.conv = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.fc = torch.nn.Linear(4, num_classes)

    def forward(self, x):
        y = self.conv(x)
        if self.features_only:
            return [y, torch.nn.functional.avg_pool2d(y, 2)]
        return self.fc(y.mean((2, 3)))


@pytest.fixture
def fake_timm(monkeypatch):
    import types
    calls = []

    def create_model(name, pretrained=True, **kwargs):
        calls.append((name, pretrained, kwargs))
        return FakeTimmNet(**kwargs)

    module = types.ModuleType('timm')
    module.create_model = create_model
    monkeypatch.setitem(sys.modules, 'timm', module)
    return calls


def test_timm_names_parse():
    assert benchmark.model_name('timm:convnext_tiny') == 'timm:convnext_tiny'
    assert benchmark.model_name('swin-t') == 'swin-t'
    for bad in ('timm:', 'convnext_tiny', 'timm'):
        with pytest.raises(Exception, match='unknown model'):
            benchmark.model_name(bad)
    from mmsparx.analysis.timm_baseline import timm_model_name
    assert timm_model_name('timm:swin_tiny_patch4_window7_224') == \
        'swin_tiny_patch4_window7_224'


def test_timm_missing_says_so(monkeypatch):
    from mmsparx.analysis.timm_baseline import TimmMissingError
    monkeypatch.setitem(sys.modules, 'timm', None)  # import fails
    with pytest.raises(TimmMissingError, match='timm is not installed'):
        benchmark.build_model('timm:convnext_tiny')


def test_timm_models_train_with_cross_entropy(fake_timm):
    row = benchmark.measure('timm:fake', 2, (32, 32), torch.device('cpu'),
                            amp=True, warmup=0, runs=1, train=True)
    assert fake_timm[0] == ('fake', False, {})  # no weights downloaded
    assert row['mode'] == 'train' and row['saved_mib_per_image'] > 0
    model = benchmark.build_model('timm:fake')
    images, samples = benchmark.random_batch(model, 3, (32, 32),
                                             torch.device('cpu'))
    assert all(0 <= int(s.gt_label) < 7 for s in samples)
    loss = benchmark.loss_of(model, images, samples, amp=False)
    labels = torch.cat([s.gt_label for s in samples])
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(
        model.model(images), labels))
    dense = benchmark.measure('timm:fake', 2, (32, 32), torch.device('cpu'),
                              amp=True, warmup=0, runs=1, dense=True)
    assert fake_timm[-1] == ('fake', False, {'features_only': True})
    assert dense['mode'] == 'dense' and dense['img_per_s'] > 0


def test_dense_step_backpropagates_every_scale():
    backbone = benchmark.build_dense_backbone('convnext-t')
    images = torch.randn(1, 3, 64, 64)
    benchmark.dense_loss(backbone, images, amp=False).backward()
    stages = backbone.stages
    assert all(p.grad is not None for p in stages[0].parameters())
    assert len(backbone(images)) == 4


# -- step_benchmark: whole training steps of configs -------------------------

def test_step_benchmark_resolves_toolbox_configs():
    sys.path.insert(0, os.path.join(ROOT, 'tools', 'analysis_tools'))
    import step_benchmark
    path = step_benchmark.resolve_config(
        'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py')
    assert os.path.isfile(path) and path.endswith(os.path.join(
        'configs', 'swin', 'mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'))
    with pytest.raises(FileNotFoundError):
        step_benchmark.resolve_config('mmdet::swin/nope.py')


def test_step_benchmark_trains_a_config_on_cpu():
    result = run_tool(
        [sys.executable, 'tools/analysis_tools/step_benchmark.py',
         'configs/rtdetr/rtdetr_r18vd_72e_coco.py', '--size', '128', '128',
         '--warmup', '0', '--runs', '2', '--device', 'cpu', '--json'],
        timeout=300, env={'OMP_NUM_THREADS': '1'})
    assert result.returncode == 0, result.stderr[-3000:]
    (row, ) = json.loads(result.stdout)
    assert row['model'] == 'RTDETR' and row['size'] == [128, 128]
    assert row['s_per_iter'] > 0 and row['peak_mem_mb'] > 0
    assert row['optim_wrapper'] == 'OptimWrapper'
    assert row['loss'] == row['loss']  # finite, not NaN
