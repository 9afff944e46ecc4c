"""tools/analysis_tools/compare_with_paper.py: a run's metrics beside the
metafile's paper row. The work dirs are written by mmengine's own Runner
(a toy model and a metric that returns set values), under the file names
of metafile configs, so the files are exactly what a real run leaves."""
import glob
import json
import os.path as osp
import runpy
import shutil
import subprocess
import sys
import uuid

import pytest
import torch
import yaml
from mmengine.config import Config
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from mmengine.registry import DATASETS, METRICS, MODELS, DefaultScope
from mmengine.runner import Runner
from torch.utils.data import Dataset

from conftest import ROOT
from mmsparx.model_zoo.metafiles import entries_by_config
from mmsparx.model_zoo.paper import (PAPER_METRICS, PaperComparisonError,
                                     compare, config_of_run, find_entry)
from mmsparx.model_zoo.run_metrics import RunMetrics, read_metrics

TOOL = osp.join(ROOT, 'tools', 'analysis_tools', 'compare_with_paper.py')
DET = 'configs/sparx/mask-rcnn_sparx-mamba-t_fpn_1x_coco.py'
SEG = 'configs/sparx/upernet_sparx-mamba-t_8xb2-160k_ade20k-512x512.py'
# What the toy metric returns: per validation, then for the test.
DET_VALIDATIONS = [dict(bbox_mAP=0.401, segm_mAP=0.382),
                   dict(bbox_mAP=0.472, segm_mAP=0.431)]
DET_TEST = dict(bbox_mAP=0.475, segm_mAP=0.433, bbox_mAP_50=0.69)
SEG_TEST = {'mIoU': 50.47, 'mAcc': 61.2, 'aAcc': 81.9}


@MODELS.register_module(force=True)
class PaperToyNet(BaseModel):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))

    def forward(self, inputs, data_samples=None, mode='tensor'):
        x = torch.stack(inputs)
        if mode == 'loss':
            return dict(loss=(x * self.weight).pow(2).mean())
        return [float(v) for v in x]


# The name a TTA model has in every toolbox (SegTTAModel, DetTTAModel,
# AverageClsScoreTTA), as tools/test.py --tta wraps the model.
MODELS.register_module(name='PaperToySegTTAModel', module=PaperToyNet,
                       force=True)


@DATASETS.register_module(force=True)
class PaperToySet(Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> dict:
        return dict(inputs=torch.tensor(float(index)))


@METRICS.register_module(force=True)
class PaperSetMetric(BaseMetric):
    """Returns ``values[i]`` at its i-th evaluation."""

    def __init__(self, values, **kwargs) -> None:
        super().__init__(**kwargs)
        self.values, self.calls = list(values), 0

    def process(self, data_batch, data_samples) -> None:
        self.results.append(len(data_samples))

    def compute_metrics(self, results) -> dict:
        self.calls += 1
        return dict(self.values[min(self.calls, len(self.values)) - 1])


def toy_config(folder, config: str, model: str, val, test,
               prefix=None) -> Config:
    """A toy run's config in a file named as ``config``: mmengine dumps it
    into the work dir under that name."""
    loader = dict(dataset=dict(type='PaperToySet'), batch_size=2,
                  num_workers=0,
                  sampler=dict(type='DefaultSampler', shuffle=False))
    text = {
        'model': dict(type=model),
        'train_dataloader': loader, 'val_dataloader': loader,
        'test_dataloader': loader,
        'train_cfg': dict(by_epoch=True, max_epochs=2, val_interval=1),
        'val_cfg': dict(), 'test_cfg': dict(),
        'optim_wrapper': dict(optimizer=dict(type='SGD', lr=0.1)),
        'val_evaluator': dict(type='PaperSetMetric', values=val,
                              prefix=prefix),
        'test_evaluator': dict(type='PaperSetMetric', values=[test],
                               prefix=prefix),
        'default_hooks': dict(logger=dict(type='LoggerHook', interval=1),
                              checkpoint=dict(type='CheckpointHook',
                                              interval=-1)),
        'visualizer': dict(type='Visualizer', name=uuid.uuid4().hex,
                           vis_backends=[dict(type='LocalVisBackend')]),
    }
    path = osp.join(str(folder), osp.basename(config))
    with open(path, 'w') as f:
        f.write('\n'.join(f'{key} = {value!r}' for key, value in
                          text.items()))
    cfg = Config.fromfile(path)
    cfg.experiment_name = uuid.uuid4().hex
    return cfg


@pytest.fixture(scope='module')
def runs(tmp_path_factory) -> dict:
    """Work dirs: a detector's training (validation only), the same after
    a test, and a segmentor's test with test-time augmentation."""
    base = tmp_path_factory.mktemp('runs')
    # A runner sets mmengine's default scope; later tests must not see it
    # (the autouse fixture of conftest covers function-scoped ones only).
    saved = dict(DefaultScope._instance_dict)
    try:
        cfg = toy_config(base, DET, 'PaperToyNet', DET_VALIDATIONS,
                         DET_TEST, prefix='coco')
        cfg.work_dir = str(base / 'det')
        runner = Runner.from_cfg(cfg)
        runner.train()
        shutil.copytree(cfg.work_dir, base / 'det_val')
        runner.test()
        seg = toy_config(base, SEG, 'PaperToySegTTAModel', [SEG_TEST],
                         SEG_TEST)
        seg.work_dir = str(base / 'seg_tta')
        Runner.from_cfg(seg).test()
    finally:
        DefaultScope._instance_dict.clear()
        DefaultScope._instance_dict.update(saved)
    return dict(det=str(base / 'det'), det_val=str(base / 'det_val'),
                seg_tta=str(base / 'seg_tta'))


def paper(config: str) -> dict:
    """metric -> the paper's number, read from the metafile itself."""
    with open(osp.join(ROOT, osp.dirname(config), 'metafile.yml')) as f:
        entry, = [m for m in yaml.safe_load(f)['Models']
                  if m['Config'] == config]
    return {name: value for result in entry['Results']
            for name, value in result['Metrics'].items()}


def published(config: str) -> dict:
    """The metafile's "Weights Results" of ``config`` (may be empty)."""
    with open(osp.join(ROOT, osp.dirname(config), 'metafile.yml')) as f:
        entry, = [m for m in yaml.safe_load(f)['Models']
                  if m['Config'] == config]
    return {name: value for result in entry.get('Weights Results') or []
            for name, value in result['Metrics'].items()}


def tool_main(argv, capsys):
    """The tool in this process: (exit status, stdout, stderr)."""
    main = runpy.run_path(TOOL)['main']
    try:
        main(argv)
        code = 0
    except SystemExit as err:
        code = err.code
    out, err = capsys.readouterr()
    return code, out, err


def test_the_runs_wrote_mmengines_files(runs):
    run, = glob.glob(osp.join(runs['det'], '2*'))
    stamp = osp.basename(run)
    assert osp.isfile(osp.join(run, f'{stamp}.json'))  # the test's
    with open(osp.join(run, 'vis_data', 'scalars.json')) as f:
        rows = [json.loads(line) for line in f]
    vals = [r for r in rows if 'iter' not in r]
    assert [r['coco/bbox_mAP'] for r in vals] == [0.401, 0.472]
    assert osp.isfile(osp.join(runs['det'], osp.basename(DET)))


def test_work_dir_gives_the_test_result_beside_the_paper(runs):
    metrics = read_metrics(runs['det'])
    assert metrics.kind == 'test'
    assert metrics.values == {f'coco/{k}': v for k, v in DET_TEST.items()}
    assert config_of_run(ROOT, metrics.work_dir) == osp.basename(DET)
    config, entry = find_entry(ROOT, osp.basename(DET))
    assert config == DET
    rows = {row['metric']: row for row in compare(metrics, entry)}
    expected = paper(DET)
    assert set(rows) == set(expected)
    for name, paper_value in expected.items():
        key, factor = PAPER_METRICS[name]
        ours = DET_TEST[key.split('/')[1]] * factor
        assert rows[name]['ours'] == pytest.approx(ours)
        assert rows[name]['paper'] == paper_value
        assert rows[name]['diff'] == pytest.approx(ours - paper_value)


def test_cli_prints_the_table(runs):
    out = subprocess.run([sys.executable, TOOL, runs['det']],
                         capture_output=True, text=True, timeout=300,
                         cwd=osp.dirname(runs['det']))
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f'config:  {DET} ')
    assert lines[1].endswith('.json (test)')
    table = {line.split(' (')[0]: line.split()[-3:] for line in lines
             if ' (COCO) ' in line}
    for name, paper_value in paper(DET).items():
        key, factor = PAPER_METRICS[name]
        ours = DET_TEST[key.split('/')[1]] * factor
        assert table[name] == [f'{ours:.2f}', f'{paper_value:.2f}',
                               f'{ours - paper_value:+.2f}']


def test_training_run_gives_its_last_validation(runs):
    metrics = read_metrics(runs['det_val'])
    assert (metrics.kind, metrics.step, metrics.unit) == ('val', 2, 'epoch')
    assert metrics.path.endswith(osp.join('vis_data', 'scalars.json'))
    assert metrics.values == {f'coco/{k}': v
                              for k, v in DET_VALIDATIONS[-1].items()}
    _, entry = find_entry(ROOT, DET)
    rows = {row['metric']: row for row in compare(metrics, entry)}
    box = DET_VALIDATIONS[-1]['bbox_mAP'] * 100
    assert rows['box AP']['diff'] == pytest.approx(box - paper(DET)['box AP'])


def test_metrics_file_and_config_given(runs, capsys):
    run = read_metrics(runs['det']).path
    code, out, err = tool_main([run, '--config', DET, '--json'], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result['config'] == DET and result['kind'] == 'test'
    rows = {row['metric']: row for row in result['rows']}
    assert rows['mask AP']['ours'] == pytest.approx(
        DET_TEST['segm_mAP'] * 100)


def test_tta_run_is_compared_with_the_ms_flip_row(runs, capsys):
    code, out, err = tool_main([runs['seg_tta']], capsys)
    assert code == 0, err
    expected = paper(SEG)
    assert 'mIoU(ms+flip)' in expected
    row = [line for line in out.splitlines()
           if line.startswith('mIoU(ms+flip) (ADE20K)')]
    ours = SEG_TEST['mIoU']
    cells = row[0].split()[-4 if published(SEG) else -3:]
    assert cells[:3] == [f'{ours:.2f}', f'{expected["mIoU(ms+flip)"]:.2f}',
                         f'{ours - expected["mIoU(ms+flip)"]:+.2f}']
    # The single-scale row is not this run's: no number, and why.
    plain = [line for line in out.splitlines()
             if line.startswith('mIoU (ADE20K)')]
    assert plain[0].split()[2] == '-'
    assert 'mIoU: single-scale; this run used test-time augmentation' in out
    if published(SEG):  # the published checkpoint's own column
        assert 'weights' in out.splitlines()[3]


@pytest.mark.parametrize('case', ['empty', 'pickle', 'not_in_metafile',
                                  'wrong_task', 'two_configs'])
def test_refusals_exit_2_with_one_paragraph(runs, tmp_path, capsys, case):
    if case == 'empty':
        argv, words = [str(tmp_path)], 'No metrics in'
    elif case == 'pickle':
        argv, words = [str(tmp_path / 'results.pkl')], 'predictions'
    elif case == 'not_in_metafile':
        argv = [runs['det'], '--config',
                'configs/demo/maskrcnn_r18_fpn_shapes.py']
        words = 'is not in any metafile'
    elif case == 'wrong_task':  # detection metrics, a classifier's config
        argv = [runs['det'], '--config',
                'configs/sparx/sparx-mamba-t_16xb128_in1k.py']
        words = 'has none of the metrics the paper gives'
    else:
        work = tmp_path / 'work'
        shutil.copytree(runs['det'], work)
        shutil.copy(osp.join(ROOT, SEG), work)
        argv, words = [str(work)], 'several metafile models'
    code, out, err = tool_main(argv, capsys)
    assert code == 2 and out == ''
    assert err.startswith('error: ') and words in err
    assert err.count('\n') == 1  # one paragraph


def test_entry_without_paper_results_is_refused():
    metrics = RunMetrics({'coco/bbox_mAP': 0.4}, 'x.json', 'test', None,
                         None)
    with pytest.raises(PaperComparisonError, match='no paper results'):
        compare(metrics, {'Config': 'configs/x.py', 'Results': []})


def test_every_metafile_metric_has_a_logged_key():
    names = {name for entry in entries_by_config(ROOT).values()
             for result in entry.get('Results') or []
             for name in result['Metrics']}
    assert names and names <= set(PAPER_METRICS)
