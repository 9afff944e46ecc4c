"""``benchmark.py model --train``: the JSON names the mode, and the timed
step really trains (a benchmark of a step that updates nothing would time
too little: no backward, or an optimizer holding no parameters); the one
timer, the one peak-memory meter and the shape table the subcommands
share; ``benchmark.py step``."""
import json
import os
import sys

import pytest
import torch

from conftest import ROOT
from mmsparx.analysis import model_steps
from mmsparx.analysis.benchmarks import model as benchmark
from mmsparx.analysis.benchmarks import step as step_benchmark


def benchmark_json(capfd, argv) -> list:
    """``benchmark.py ARGV --json`` in this process: exit status 0, and
    its stdout (the file descriptor, C-level output included) is the JSON
    alone."""
    from tools.analysis_tools.benchmark import main
    capfd.readouterr()
    status = main([*argv, '--json'])
    out, err = capfd.readouterr()
    assert status == 0, err[-3000:]
    return json.loads(out)


def test_train_json_names_the_mode(capfd):
    rows = benchmark_json(capfd, [
        'model', 'spartan-xt', '--train', '--batch', '1', '--input', '64',
        '64', '--runs', '1', '--warmup', '0', '--device', 'cpu'])
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
    model = model_steps.build_model('resnet-18')
    keys = list(model.state_dict())
    model_steps.compile_features(model)
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
    images, samples = model_steps.random_batch(model, 2, (64, 64),
                                               torch.device('cpu'))
    assert all(0 <= int(s.gt_label) < 10 for s in samples)
    optimizer = model_steps.make_optimizer(model)
    # Every parameter is handed to AdamW with the recipes' settings.
    assert isinstance(optimizer, torch.optim.AdamW)
    assert sum(len(g['params']) for g in optimizer.param_groups) == \
        len(list(model.parameters()))
    assert optimizer.defaults['weight_decay'] == 0.05
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    loss = model_steps.train_step(model, optimizer, images, samples, amp)
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
    assert model_steps.model_name('timm:convnext_tiny') == \
        'timm:convnext_tiny'
    assert model_steps.model_name('swin-t') == 'swin-t'
    for bad in ('timm:', 'convnext_tiny', 'timm'):
        with pytest.raises(Exception, match='unknown model'):
            model_steps.model_name(bad)
    from mmsparx.analysis.timm_baseline import timm_model_name
    assert timm_model_name('timm:swin_tiny_patch4_window7_224') == \
        'swin_tiny_patch4_window7_224'


def test_timm_missing_says_so(monkeypatch):
    from mmsparx.analysis.timm_baseline import TimmMissingError
    monkeypatch.setitem(sys.modules, 'timm', None)  # import fails
    with pytest.raises(TimmMissingError, match='timm is not installed'):
        model_steps.build_model('timm:convnext_tiny')


def test_timm_models_train_with_cross_entropy(fake_timm):
    row = benchmark.measure('timm:fake', 2, (32, 32), torch.device('cpu'),
                            amp=True, warmup=0, runs=1, train=True)
    assert fake_timm[0] == ('fake', False, {})  # no weights downloaded
    assert row['mode'] == 'train' and row['saved_mib_per_image'] > 0
    model = model_steps.build_model('timm:fake')
    images, samples = model_steps.random_batch(model, 3, (32, 32),
                                               torch.device('cpu'))
    assert all(0 <= int(s.gt_label) < 7 for s in samples)
    loss = model_steps.loss_of(model, images, samples, amp=False)
    labels = torch.cat([s.gt_label for s in samples])
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(
        model.model(images), labels))
    dense = benchmark.measure('timm:fake', 2, (32, 32), torch.device('cpu'),
                              amp=True, warmup=0, runs=1, dense=True)
    assert fake_timm[-1] == ('fake', False, {'features_only': True})
    assert dense['mode'] == 'dense' and dense['img_per_s'] > 0


def test_dense_step_backpropagates_every_scale():
    backbone = model_steps.build_dense_backbone('convnext-t')
    images = torch.randn(1, 3, 64, 64)
    model_steps.dense_loss(backbone, images, amp=False).backward()
    stages = backbone.stages
    assert all(p.grad is not None for p in stages[0].parameters())
    assert len(backbone(images)) == 4


# -- benchmark.py step: whole training steps of configs ----------------------

def test_step_benchmark_resolves_toolbox_configs():
    path = step_benchmark.resolve_config(
        'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py')
    assert os.path.isfile(path) and path.endswith(os.path.join(
        'configs', 'swin', 'mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'))
    with pytest.raises(FileNotFoundError):
        step_benchmark.resolve_config('mmdet::swin/nope.py')


def test_step_benchmark_trains_a_config_on_cpu(capfd):
    (row, ) = benchmark_json(capfd, [
        'step', os.path.join(ROOT, 'configs', 'rtdetr',
                             'rtdetr_r18vd_72e_coco.py'), '--size', '128',
        '128', '--warmup', '0', '--runs', '1', '--device', 'cpu'])
    assert row['model'] == 'RTDETR' and row['size'] == [128, 128]
    assert row['s_per_iter'] > 0 and row['peak_mem_mb'] > 0
    assert row['optim_wrapper'] == 'OptimWrapper'
    assert row['loss'] == row['loss']  # finite, not NaN


# -- what the subcommands share: one timer, one peak meter, one shape table --

def test_the_timer_warms_up_then_keeps_every_run():
    from mmsparx.analysis.timing import time_runs
    calls = []
    timing = time_runs(lambda: calls.append(1), warmup=2, runs=3,
                       device='cpu')
    assert len(calls) == 5
    assert len(timing.seconds) == 3 and len(timing.warmup_seconds) == 2
    assert timing.minimum <= timing.median <= timing.maximum
    assert timing.median_ms == pytest.approx(timing.median * 1e3)
    assert timing.spread >= 0
    with pytest.raises(ValueError, match='at least 1'):
        time_runs(lambda: None, warmup=0, runs=0, device='cpu')


def test_peak_memory_on_cpu_is_the_growth_of_the_peak_rss(monkeypatch):
    from mmsparx.analysis import peak_memory
    readings = iter([100.0, 100.0, 164.5])
    monkeypatch.setattr(peak_memory, 'peak_rss_mib', lambda: next(readings))
    meter = peak_memory.PeakMemory('cpu')  # starts at 100 MiB
    assert meter.kind == 'process_rss_growth'
    assert meter.mib() == 0.0
    assert meter.mib(above_start=True) == 64.5  # the same on CPU


def test_one_shape_table_for_the_kernel_benchmarks():
    """Each key means one shape: the block width C (norm) or SS2D's inner
    width 2C (``-inner``: the scan and its output norm), at the sizes the
    separate tables gave before."""
    from mmsparx.analysis.shapes import SHAPES, inner_names

    def of(name):
        entry = SHAPES[name]
        return (entry.batch, entry.channels, entry.height, entry.width)

    # What ss2d's table held: (batch, 2C, H, W, dt rank).
    for name, (b, d, h, w, rank) in {
            'cls224-s1': (64, 192, 56, 56, 6),
            'cls224-s2': (64, 384, 28, 28, 12),
            'cls224-s3': (64, 640, 14, 14, 20),
            'cls224-s4': (64, 1024, 7, 7, 32),
            'dense-s1': (2, 192, 200, 336, 6),
            'dense-s3': (2, 640, 50, 84, 20)}.items():
        assert of(name + '-inner') == (b, d, h, w)
        assert SHAPES[name + '-inner'].dt_rank == rank
        assert SHAPES[name].channels * 2 == d
    # What norm's table held: (batch, C, H, W).
    assert of('dense-s1') == (2, 96, 200, 336)
    assert of('dense-s1-inner') == (2, 192, 200, 336)
    assert of('cls224-s1') == (64, 96, 56, 56)
    assert set(inner_names()) == {n for n in SHAPES if 'inner' in n}


def test_every_subcommand_parses_its_help(capsys):
    from mmsparx.analysis.benchmarks import SUBCOMMANDS
    from tools.analysis_tools.benchmark import main
    assert sorted(SUBCOMMANDS) == sorted(
        ['model', 'step', 'ss2d', 'norm', 'scan', 'census'])
    for name in SUBCOMMANDS:
        with pytest.raises(SystemExit) as done:
            main([name, '--help'])
        assert done.value.code == 0
        assert '--json' in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        main([])  # a subcommand is required
    assert done.value.code == 2


def test_no_tool_imports_another_tool():
    """Tools share code through the package, not through ``sys.path``."""
    import ast
    import glob
    folder = os.path.join(ROOT, 'tools', 'analysis_tools')
    tools = {os.path.basename(p)[:-3]
             for p in glob.glob(os.path.join(folder, '*.py'))}
    wrong = []
    for path in glob.glob(os.path.join(folder, '*.py')):
        for node in ast.walk(ast.parse(open(path).read())):
            names = ([a.name for a in node.names]
                     if isinstance(node, ast.Import) else
                     [node.module or ''] if isinstance(node, ast.ImportFrom)
                     else [])
            wrong += [f'{path}: {n}' for n in names
                      if n.split('.')[0] in tools]
    assert not wrong, wrong
