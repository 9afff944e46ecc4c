"""Safe loading of checkpoints that hold foreign objects.

Every file here is written with ``torch.save``. Objects whose unpickling
would run code write a marker file when they are rebuilt; the safe loader
must keep the tensors and never write the marker, while a trusted load
(the control) does write it, which proves the trap is live.
"""
import collections
import io
import logging
import pickle
import sys
import types
import typing
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.logging import MMLogger
from mmengine.model import BaseModule
from torch import nn

import mmsparx.fileio.reading as checkpoint_module
from mmsparx.fileio import (LoadReport, load_checkpoint_file,
                            load_checkpoint_with_ignored, load_state_dict,
                            state_dict_of)
from mmsparx.fileio.restricted_unpickle import ForeignObject


class Tripwire:
    """A foreign object whose rebuilding runs code: ``__reduce__`` makes the
    unpickler call the class, and an armed construction writes the marker.
    """

    def __init__(self, marker: str, armed: bool = True) -> None:
        self.marker = marker
        if armed:
            Path(marker).write_text('code from the checkpoint ran')

    def __reduce__(self):
        return (Tripwire, (self.marker,))


TRIPWIRE = f'{__name__}.Tripwire'


class Records(logging.Handler):
    """Keeps the messages logged while it is attached."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: typing.List[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, level: int = logging.DEBUG) -> typing.List[str]:
        return [r.getMessage() for r in self.records if r.levelno >= level]


@pytest.fixture
def mm_log():
    """What goes to the current mmengine logger (print_log 'current')."""
    logger = MMLogger.get_current_instance()
    handler = Records()
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def assert_same_weights(loaded, expected) -> None:
    assert list(loaded) == list(expected)
    for key, value in expected.items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0)


def trained_conv_bn() -> nn.Sequential:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    model(torch.randn(2, 3, 8, 8))  # running stats away from their init
    return model


# --- a dict with a foreign object next to the weights ---------------------


def test_foreign_object_is_ignored_and_weights_load(tmp_path, mm_log):
    marker = tmp_path / 'marker'
    weights = nn.Linear(4, 3).state_dict()
    path = tmp_path / 'train.pth'
    torch.save({'epoch': 7, 'config': Tripwire(str(marker), armed=False),
                'model': weights}, path)

    loaded, ignored = load_checkpoint_with_ignored(str(path))
    assert not marker.exists()
    assert ignored == [TRIPWIRE]
    assert loaded['epoch'] == 7
    assert isinstance(loaded['config'], ForeignObject)
    assert loaded['config'].foreign_name == TRIPWIRE
    assert loaded['config'].foreign_args == (str(marker),)
    assert_same_weights(state_dict_of(loaded), weights)
    warnings = mm_log.messages(logging.WARNING)
    assert len(warnings) == 1
    assert TRIPWIRE in warnings[0] and 'no code ran' in warnings[0]

    # The control: a trusted load rebuilds the object and runs its code.
    load_checkpoint_file(str(path), weights_only=False)
    assert marker.exists()


def fake_omegaconf() -> typing.Dict[str, types.ModuleType]:
    """Modules named like omegaconf's, with classes pickled the way its
    DictConfig is (state = its ``__dict__`` of metadata and child nodes).
    """
    modules = {name: types.ModuleType(name) for name in (
        'omegaconf', 'omegaconf.base', 'omegaconf.nodes',
        'omegaconf.dictconfig')}

    class ContainerMetadata:
        def __init__(self, key_type, element_type, object_type) -> None:
            self.key_type = key_type
            self.element_type = element_type
            self.object_type = object_type
            self.flags = {'readonly': False}

    class AnyNode:
        def __init__(self, value) -> None:
            self._val = value
            self._parent = None

    class DictConfig:
        def __init__(self, content: dict) -> None:
            self._metadata = ContainerMetadata(typing.Any, typing.Any, dict)
            self._parent = None
            self._content = {k: AnyNode(v) for k, v in content.items()}

        def __getstate__(self) -> dict:
            return dict(self.__dict__)

        def __setstate__(self, state: dict) -> None:
            raise AssertionError('DictConfig.__setstate__ ran on load')

    for cls, module in ((ContainerMetadata, 'omegaconf.base'),
                        (AnyNode, 'omegaconf.nodes'),
                        (DictConfig, 'omegaconf.dictconfig')):
        cls.__module__ = module
        cls.__qualname__ = cls.__name__
        setattr(modules[module], cls.__name__, cls)
    return modules


def test_spartan_training_file_with_dictconfig(tmp_path, monkeypatch,
                                               mm_log):
    """The SpaRTAN authors' layout: {epoch, config, model, optim, sched,
    scaler} with an omegaconf DictConfig that cannot be imported here."""
    model = nn.Linear(4, 3)
    optim = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(optim, step_size=1)
    model(torch.randn(2, 4)).sum().backward()
    optim.step()
    sched.step()
    path = tmp_path / 'spartan.pth'
    modules = fake_omegaconf()
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    config = modules['omegaconf.dictconfig'].DictConfig(
        {'lr': 0.1, 'arch': 'spartan_t'})
    torch.save({'epoch': 3, 'config': config, 'model': model.state_dict(),
                'optim': optim.state_dict(), 'sched': sched.state_dict(),
                'scaler': {}}, path)
    for name in modules:
        monkeypatch.delitem(sys.modules, name)

    loaded, ignored = load_checkpoint_with_ignored(str(path))
    assert ignored[0] == 'omegaconf.dictconfig.DictConfig'
    assert {'omegaconf.base.ContainerMetadata',
            'omegaconf.nodes.AnyNode'} <= set(ignored)
    assert_same_weights(state_dict_of(loaded), model.state_dict())
    momentum = loaded['optim']['state'][0]['momentum_buffer']
    torch.testing.assert_close(
        momentum, optim.state_dict()['state'][0]['momentum_buffer'])
    assert loaded['sched']['last_epoch'] == 1
    # The config's data is kept, inert: nothing of it was rebuilt.
    content = loaded['config'].foreign_state['_content']
    assert content['lr'].foreign_state['_val'] == 0.1
    assert 'omegaconf.dictconfig.DictConfig' in mm_log.messages(
        logging.WARNING)[0]

    # A trusted load needs omegaconf; the message says so and the way out.
    monkeypatch.setenv('MMSPARX_UNSAFE_LOAD', '1')
    with pytest.raises(RuntimeError, match='omegaconf.*without '
                       'MMSPARX_UNSAFE_LOAD'):
        load_checkpoint_file(str(path))


# --- a whole pickled nn.Module --------------------------------------------


class Net(nn.Module):
    """A model class of the authors' code, with things no state dict has."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.stem = trained_conv_bn()
        self.blocks = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 2)])
        self.register_buffer('scale', torch.full((2,), 3.0))
        self.register_buffer('cache', torch.ones(3), persistent=False)
        self.act = torch.nn.functional.gelu
        self.tripwire = Tripwire(marker, armed=False)


def test_pickled_sequential_gives_its_state_dict(tmp_path, mm_log):
    model = trained_conv_bn()
    path = tmp_path / 'whole.pth'
    torch.save(model, path)

    loaded, ignored = load_checkpoint_with_ignored(str(path))
    assert isinstance(loaded, ForeignObject)
    assert set(ignored) == {'torch.nn.modules.container.Sequential',
                            'torch.nn.modules.conv.Conv2d',
                            'torch.nn.modules.batchnorm.BatchNorm2d'}
    assert_same_weights(state_dict_of(loaded), model.state_dict())


def test_pickled_custom_module_runs_no_code(tmp_path, mm_log):
    marker = tmp_path / 'marker'
    model = Net(str(marker))
    path = tmp_path / 'net.pth'
    torch.save(model, path)

    loaded, ignored = load_checkpoint_with_ignored(str(path))
    assert not marker.exists()
    assert f'{__name__}.Net' in ignored and TRIPWIRE in ignored
    weights = state_dict_of(loaded)
    assert_same_weights(weights, model.state_dict())
    assert 'cache' not in weights  # non-persistent buffer
    # The same file wrapped the way some training scripts do it.
    torch.save({'model': model, 'epoch': 1}, path)
    assert_same_weights(state_dict_of(load_checkpoint_file(str(path))),
                        model.state_dict())
    assert not marker.exists()

    trusted = load_checkpoint_file(str(path), weights_only=False)
    assert marker.exists()  # the control: the trap is live
    assert_same_weights(state_dict_of(trusted), model.state_dict())


def test_pickled_module_through_mmengine_init_cfg(tmp_path):
    import mmsparx  # noqa: F401  installs the loader into mmengine

    class Backbone(BaseModule):
        def __init__(self, init_cfg=None) -> None:
            super().__init__(init_cfg)
            self.fc = nn.Linear(2, 2)

    source = nn.Module()
    source.fc = nn.Linear(2, 2)
    path = tmp_path / 'whole.pth'
    torch.save(source, path)
    net = Backbone(init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    net.init_weights()
    torch.testing.assert_close(net.fc.weight, source.fc.weight)


# --- what still loads as before, and what is still refused ----------------


@pytest.fixture
def no_fallback(monkeypatch):
    """Fail if the restricted fallback is used at all."""
    def refuse(*args, **kwargs):
        raise AssertionError('the restricted fallback was used')
    monkeypatch.setattr(checkpoint_module, '_load_foreign', refuse)


def test_plain_and_mmengine_checkpoints_take_the_safe_path(tmp_path,
                                                           no_fallback):
    from mmengine.logging import HistoryBuffer
    weights = trained_conv_bn().state_dict()
    plain = tmp_path / 'plain.pth'
    torch.save(weights, plain)
    loaded, ignored = load_checkpoint_with_ignored(str(plain))
    assert ignored == [] and type(loaded) is collections.OrderedDict
    assert_same_weights(loaded, weights)
    assert state_dict_of(loaded).keys() == weights.keys()

    buffer = HistoryBuffer()
    buffer.update(0.25)
    runner = tmp_path / 'runner.pth'
    torch.save({'meta': {'epoch': 2, 'seed': np.int64(5),
                         'arr': np.arange(3)},
                'state_dict': weights,
                'message_hub': {'log_scalars': {'loss': buffer}}}, runner)
    loaded, ignored = load_checkpoint_with_ignored(str(runner))
    assert ignored == []
    assert loaded['message_hub']['log_scalars']['loss'].current() == 0.25
    assert loaded['meta']['arr'].tolist() == [0, 1, 2]
    assert_same_weights(state_dict_of(loaded), weights)


def test_damaged_files_keep_the_clear_errors(tmp_path):
    whole = io.BytesIO()
    torch.save({'config': Tripwire('unused', armed=False),
                'w': torch.ones(8)}, whole)
    legacy = io.BytesIO()
    torch.save({'w': torch.ones(8)}, legacy,
               _use_new_zipfile_serialization=False)
    cases = {'empty.pth': b'', 'text.pth': b'not a checkpoint',
             'cut.pth': whole.getvalue()[:len(whole.getvalue()) // 2],
             'cut_legacy.pth': legacy.getvalue()[:200]}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(RuntimeError, match=f'{name}.*could not be read'
                           '.*truncated'):
            load_checkpoint_file(str(tmp_path / name))
    with pytest.raises(RuntimeError, match='the file is empty'):
        load_checkpoint_file(str(tmp_path / 'empty.pth'))


def test_nothing_to_recover_is_refused_by_name(tmp_path):
    marker = tmp_path / 'marker'
    path = tmp_path / 'objects.pth'
    torch.save({'state_dict': {}, 'obj': Tripwire(str(marker), armed=False)},
               path)
    with pytest.raises(RuntimeError) as err:
        load_checkpoint_file(str(path))
    message = str(err.value)
    assert TRIPWIRE in message and 'MMSPARX_UNSAFE_LOAD=1' in message
    assert '\x1b' not in message  # no colour codes from torch's message
    assert not marker.exists()


def write_legacy_file(path: Path, payload: bytes) -> None:
    """A non-zip torch file around a hand-written pickle payload."""
    from torch.serialization import MAGIC_NUMBER, PROTOCOL_VERSION
    with open(path, 'wb') as f:
        for header in (MAGIC_NUMBER, PROTOCOL_VERSION,
                       {'protocol_version': PROTOCOL_VERSION,
                        'little_endian': True, 'type_sizes': {}}):
            pickle.dump(header, f, protocol=2)
        f.write(payload)
        pickle.dump([], f, protocol=2)  # no storages


def test_crafted_pickle_calls_nothing(tmp_path):
    """open(marker, 'w') directly and through getattr(__import__(...)):
    every callable is a placeholder, so no file is created."""
    marker = str(tmp_path / 'marker').encode()
    chained = (b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(S'builtins'\n"
               b"tRS'open'\ntR(S'" + marker + b"'\nS'w'\ntR.")
    direct = b"(dS'x'\ncbuiltins\nopen\n(S'" + marker + b"'\nS'w'\ntRs."
    for name, payload, refused in (
            ('chained', chained, r'builtins\.__import__, builtins\.getattr'),
            ('direct', direct, r'builtins\.open')):
        path = tmp_path / f'{name}.pth'
        write_legacy_file(path, payload)
        with pytest.raises(RuntimeError, match=refused):
            load_checkpoint_file(str(path))
        assert not (tmp_path / 'marker').exists()


def test_state_dict_of_explains_a_non_dict(tmp_path):
    with pytest.raises(TypeError, match='builtins.list, not a state dict'):
        state_dict_of([torch.ones(1)])
    model = trained_conv_bn()
    assert_same_weights(state_dict_of(model), model.state_dict())
    assert_same_weights(state_dict_of({'model': model}), model.state_dict())


# --- the key report --------------------------------------------------------


def long_key(i: int) -> str:
    return f'backbone.stages.{i}.blocks.{i}.attention.projection.weight'


def test_report_string_is_capped_and_the_log_has_everything():
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(40)])
    state = {long_key(i): torch.zeros(1) for i in range(300)}
    state.update({f'{i}.weight': torch.zeros(3, 3) for i in range(25)})
    logger = logging.getLogger('mmsparx.test_safe_loading.report')
    handler = Records()
    logger.addHandler(handler)
    try:
        report = load_state_dict(model, state, logger=logger)
    finally:
        logger.removeHandler(handler)

    # The dataclass keeps every key.
    assert isinstance(report, LoadReport)
    assert len(report.unexpected) == 300 and len(report.missing) == 55
    assert len(report.mismatched) == 25
    text = str(report)
    assert len(text) < 2500
    assert '... and 290 more' in text and '... and 45 more' in text
    assert '... and 15 more' in text
    assert long_key(0) in text and long_key(10) not in text

    logged = '\n'.join(handler.messages())
    assert 'full list in the log' in logged
    assert all(long_key(i) in logged for i in range(300))
    assert all(f'{i}.bias' in logged for i in range(40))
    assert '24.weight (3, 3) vs (2, 2)' in logged


def test_strict_failure_message_is_capped():
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(40)])
    with pytest.raises(RuntimeError) as err:
        load_state_dict(model, {}, strict=True)
    message = str(err.value)
    assert len(message) < 600
    assert 'and 70 more (pass logger= to log the full list)' in message
