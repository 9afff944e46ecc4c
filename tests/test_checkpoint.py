"""The one checkpoint loader: safe loading and key reports."""
import collections

import numpy as np
import pytest
import torch
from mmengine.model import BaseModule
from torch import nn

from mmsparx.fileio import (LoadReport, load_checkpoint_file, load_state_dict,
                            state_dict_of)


def small_model():
    return nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))


def test_mismatched_keys_are_reported(tmp_path):
    source = small_model().state_dict()
    checkpoint = {
        '0.weight': source['0.weight'] + 1,  # loads
        '1.weight': torch.zeros(5, 3),  # wrong shape
        'head.bias': torch.zeros(2),  # not in the model
    }
    path = tmp_path / 'ckpt.pth'
    torch.save({'state_dict': checkpoint, 'meta': {'epoch': 3}}, path)
    model = small_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_state_dict(model, state_dict_of(load_checkpoint_file(
        str(path))))
    assert report.loaded == ['0.weight']
    assert report.missing == ['0.bias', '1.bias']
    assert report.unexpected == ['head.bias']
    assert report.mismatched == [('1.weight', (5, 3), (2, 3))]
    assert not report.ok
    torch.testing.assert_close(model[0].weight, source['0.weight'] + 1)
    torch.testing.assert_close(model[1].weight, before['1.weight'])
    text = str(report)
    for key in ('0.bias', 'head.bias', '1.weight (5, 3) vs (2, 3)'):
        assert key in text


def test_strict_load_raises_before_copying():
    model = small_model()
    before = model[0].weight.clone()
    state = {k: v + 1 for k, v in small_model().state_dict().items()}
    state['extra'] = torch.zeros(1)
    with pytest.raises(RuntimeError, match='unexpected.*extra'):
        load_state_dict(model, state, strict=True)
    torch.testing.assert_close(model[0].weight, before)
    del state['extra']
    assert load_state_dict(model, state, strict=True).ok


def test_mmengine_style_checkpoint_loads_safely(tmp_path):
    from mmengine.logging import HistoryBuffer
    buffer = HistoryBuffer()
    buffer.update(0.5)
    path = tmp_path / 'runner.pth'
    torch.save({
        'meta': {'epoch': 1, 'seed': np.int64(3), 'arr': np.arange(3)},
        'state_dict': collections.OrderedDict(w=torch.ones(2)),
        'message_hub': {'log_scalars': {'train/loss': buffer}},
    }, path)
    loaded = load_checkpoint_file(str(path))
    assert loaded['message_hub']['log_scalars']['train/loss'].current() == 0.5
    assert loaded['meta']['arr'].tolist() == [0, 1, 2]


class Payload:
    """Not on the safe list: unpickling it could run arbitrary code."""


def test_unsafe_objects_are_refused_with_the_fix(tmp_path, monkeypatch):
    path = tmp_path / 'unsafe.pth'
    torch.save({'state_dict': {}, 'obj': Payload()}, path)
    with pytest.raises(RuntimeError, match='MMSPARX_UNSAFE_LOAD=1'):
        load_checkpoint_file(str(path))
    monkeypatch.setenv('MMSPARX_UNSAFE_LOAD', '1')
    assert isinstance(load_checkpoint_file(str(path))['obj'], Payload)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        load_checkpoint_file(str(tmp_path / 'nope.pth'))
    bad = tmp_path / 'bad.pth'
    bad.write_bytes(b'not a checkpoint')
    with pytest.raises(RuntimeError, match='bad.pth'):
        load_checkpoint_file(str(bad))


def test_pretrained_init_cfg_goes_through_the_loader(tmp_path):
    import mmsparx  # noqa: F401  installs the loader into mmengine

    class Net(BaseModule):
        def __init__(self, init_cfg=None):
            super().__init__(init_cfg)
            self.fc = nn.Linear(2, 2)

    source = Net()
    path = tmp_path / 'pre.pth'
    # numpy in meta: plain torch.load(weights_only=True) refuses this file.
    torch.save({'state_dict': source.state_dict(),
                'meta': {'np': np.float64(1.0)}}, path)
    net = Net(init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    net.init_weights()
    torch.testing.assert_close(net.fc.weight, source.fc.weight)


def test_state_dict_of_unwraps_common_layouts():
    weights = {'a': torch.ones(1)}
    for wrapped in ({'state_dict': weights}, {'model': weights}, weights):
        assert state_dict_of(wrapped) == weights


def test_report_ok_when_everything_loads():
    model = small_model()
    report = load_state_dict(model, small_model().state_dict())
    assert isinstance(report, LoadReport) and report.ok
    assert len(report.loaded) == 4
