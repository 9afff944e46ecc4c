"""``benchmark.py --train``: the JSON names the mode, and the timed step
really trains (a benchmark of a step that updates nothing would time too
little: no backward, or an optimizer holding no parameters)."""
import json
import os
import sys

import pytest
import torch

from conftest import ROOT, run_tool

sys.path.insert(0, os.path.join(ROOT, 'tools', 'analysis'))
import benchmark  # noqa: E402


def test_train_json_names_the_mode():
    result = run_tool(
        [sys.executable, 'tools/analysis/benchmark.py', 'spartan-xt',
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
