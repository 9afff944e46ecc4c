"""Shared fixtures: small generated datasets, a tool runner, and config
handling without its three slow, output-neutral steps."""
import contextlib
import functools
import os
import os.path as osp
import socket
import subprocess
import sys
from typing import Iterator, Tuple

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

if os.environ.get('PYTEST_XDIST_WORKER'):
    # `make test` runs two workers (pytest-xdist) on two cores: each, and
    # the processes its tests start, one OpenMP thread, or they contend.
    os.environ['OMP_NUM_THREADS'] = '1'
    torch.set_num_threads(1)

if os.environ.get('TRITON_INTERPRET') == '1':
    # Interpreted kernels: the interpreter's generic scan and reduce run
    # lane-wise (the same numbers, test_interpreter_lanes.py).
    try:
        import interpreter_lanes
        interpreter_lanes.install()
    except ImportError:  # no triton: its tests skip themselves
        pass

# The longest test files, run first: under pytest-xdist (--dist loadfile)
# the other worker works through the rest meanwhile instead of the suite
# waiting for them at its end.
LONGEST_FIRST = ('test_gpu_check.py', 'test_config_training.py',
                 'test_onnx_export.py', 'test_compile.py',
                 'test_model_zoo.py', 'test_triton_interpreter.py',
                 'test_launchers.py', 'test_rtdetr_configs.py',
                 'test_training.py', 'test_toolbox_train.py',
                 'test_sparx_dense_checkpoints.py', 'test_inference.py',
                 'test_resume.py', 'test_dist_threads.py',
                 'test_bad_inputs.py')


def pytest_collection_modifyitems(config, items) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


DEMO_DET = osp.join(ROOT, 'configs', 'demo', 'maskrcnn_r18_fpn_shapes.py')
DEMO_SEG = osp.join(ROOT, 'configs', 'demo', 'upernet_r18_ade_shapes.py')


@pytest.fixture(scope='session')
def coco_root(tmp_path_factory):
    from mmsparx.datasets import generate_coco
    root = str(tmp_path_factory.mktemp('coco'))
    generate_coco(root, num_train=4, num_val=2, size=(128, 160), seed=1)
    return root


@pytest.fixture(scope='session')
def ade_root(tmp_path_factory):
    from mmsparx.datasets import generate_ade20k
    root = str(tmp_path_factory.mktemp('ade'))
    generate_ade20k(root, num_train=4, num_val=2, size=(128, 160), seed=1)
    return root


@pytest.fixture(scope='session')
def imagenet_root(tmp_path_factory):
    from mmsparx.datasets import generate_imagenet
    root = str(tmp_path_factory.mktemp('imagenet'))
    generate_imagenet(root, num_classes=4, train_per_class=3,
                      val_per_class=1, size=(32, 32), seed=1)
    return root


def load_test_config(config: str, options, work_dir, launcher='none'):
    """The tools' config loading, with a fresh experiment name: runners in
    one process share mmengine's global instances by that name."""
    import uuid

    from mmsparx.utils.cli import load_config
    cfg = load_config(config, options, launcher, str(work_dir))
    cfg.experiment_name = uuid.uuid4().hex
    return cfg


def small_mask_rcnn(neck_in: list, fc_out: int = 64) -> dict:
    """cfg-options giving a Mask R-CNN a 32-channel FPN and heads (``fc_out``
    in the box head's shared layers) over backbone stages of ``neck_in``
    channels: the same detector, a fraction of its weights."""
    return {
        'model.neck.in_channels': neck_in,
        'model.neck.out_channels': 32,
        'model.rpn_head.in_channels': 32, 'model.rpn_head.feat_channels': 32,
        'model.roi_head.bbox_roi_extractor.out_channels': 32,
        'model.roi_head.bbox_head.in_channels': 32,
        'model.roi_head.bbox_head.fc_out_channels': fc_out,
        'model.roi_head.mask_roi_extractor.out_channels': 32,
        'model.roi_head.mask_head.in_channels': 32,
        'model.roi_head.mask_head.conv_out_channels': 32,
    }


# A serialised dataset runs gc.collect() on every build (a second in a
# test process); it only saves memory with several workers.
NOT_SERIALISED = {'train_dataloader.dataset.serialize_data': False,
                  'val_dataloader.dataset.serialize_data': False}


def coco_options(root: str) -> dict:
    """Config overrides that point the demo detector at ``root``, small."""
    ann = osp.join(root, 'annotations', 'instances_val.json')
    return {
        'train_dataloader.dataset.data_root': root + '/',
        'val_dataloader.dataset.data_root': root + '/',
        'test_dataloader.dataset.data_root': root + '/',
        'val_evaluator.ann_file': ann,
        'test_evaluator.ann_file': ann,
        'train_cfg.max_epochs': 1,
        'train_cfg.val_interval': 1,
        'default_hooks.checkpoint.interval': 1,
        'default_hooks.logger.interval': 1,
        'train_dataloader.dataset.pipeline.2.scale': (160, 128),
        'val_dataloader.dataset.pipeline.1.scale': (160, 128),
        'test_dataloader.dataset.pipeline.1.scale': (160, 128),
    }


def coco_paper_options(root: str) -> dict:
    """``coco_options`` for a paper's COCO config (not the demo one): no
    pretrained backbone, the 3 generated shape classes, the generated set's
    file names."""
    options = coco_options(root)
    options['model.backbone.init_cfg'] = None
    options['model.roi_head.bbox_head.num_classes'] = 3
    options['model.roi_head.mask_head.num_classes'] = 3
    shapes = dict(classes=('rectangle', 'ellipse', 'triangle'))
    for split, loader in (('train', 'train_dataloader'),
                          ('val', 'val_dataloader'),
                          ('val', 'test_dataloader')):
        options[f'{loader}.dataset.ann_file'] = \
            f'annotations/instances_{split}.json'
        options[f'{loader}.dataset.data_prefix.img'] = f'{split}/'
        options[f'{loader}.dataset.metainfo'] = shapes
    return options


# Small archs for fast tests (test_spartan, test_sparseswin, test_compile).
# SpaRTAN, small but complete: every stage, F and D convs, e = 4 and 2.
SPARTAN_TINY = dict(channels=(8, 16, 24, 32), depths=(1, 2, 2, 1),
                    expand_ratios=(4, 4, 2, 2))
# SparseSwin: 64x64 inputs give a 4x4 stride-16 grid.
SPARSESWIN_SMALL = dict(embed_dims=16, depths=(1, 1, 2), num_heads=(1, 2, 2),
                        window_size=4, num_tokens=5, token_dims=32,
                        sparta_depth=2, sparta_heads=4)

OFFICIAL_KEYS = osp.join(ROOT, 'tests', 'data', 'official_keys')


def official_shapes(name: str) -> dict:
    """key -> shape of the authors' state dict ``name`` (a file in
    tests/data/official_keys, from the spec)."""
    shapes = {}
    with open(osp.join(OFFICIAL_KEYS, f'{name}.txt')) as f:
        for line in f:
            if line.startswith('#') or not line.strip():
                continue
            key, shape = line.rstrip('\n').split('\t')
            shapes[key] = tuple(int(s) for s in shape.strip('()').split(',')
                                if s.strip())
    return shapes


def official_state_dict(name: str, seed: int = 0) -> dict:
    """Random tensors in the authors' keys and shapes."""
    g = torch.Generator().manual_seed(seed)
    return {key: torch.randn(shape, generator=g)
            for key, shape in official_shapes(name).items()}


def as_cli(options: dict) -> list:
    """``--cfg-options`` words for ``options``."""
    words = []
    for key, value in options.items():
        if isinstance(value, tuple):
            value = '(' + ','.join(map(str, value)) + ')'
        words.append(f'{key}={value}')
    return ['--cfg-options', *words]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run_tool(args, timeout=600, env=None) -> subprocess.CompletedProcess:
    """Run a command from the repo root with this interpreter as PYTHON."""
    full_env = dict(os.environ, PYTHON=sys.executable, **(env or {}))
    return subprocess.run(args, cwd=ROOT, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


@contextlib.contextmanager
def memoised_base_lookup() -> Iterator[None]:
    """Memoise mmengine's lookup of ``mmdet::``-style base paths.

    For every such base mmengine reads each metafile of the package (about
    400 YAML files for mmdet, 0.2 s per base), only to learn that a base is
    not a model config. The answer only depends on the arguments, so it is
    kept, and the metafiles, which this lookup only reads, are read once
    per package; the configs load exactly as without this.
    """
    from mmengine.config import config as config_module
    from mmengine.config import utils as utils_module
    real = config_module._get_external_cfg_path
    real_load = utils_module.load
    metafiles = {}

    def load_metafile(file, *args, **kwargs):
        if args or kwargs or not str(file).endswith('.yml'):
            return real_load(file, *args, **kwargs)
        if file not in metafiles:
            metafiles[file] = real_load(file)
        return metafiles[file]

    @functools.lru_cache(maxsize=None)
    def lookup(package_path: str, cfg_file: str) -> Tuple[str, tuple]:
        try:
            return real(package_path, cfg_file), ()
        except ValueError as err:
            # Only the message is kept: the exception's traceback would
            # keep every frame (and runner) above it alive.
            return '', err.args

    def cached(package_path: str, cfg_file: str) -> str:
        path, error = lookup(package_path, cfg_file)
        if error:
            raise ValueError(*error)
        return path

    config_module._get_external_cfg_path = cached
    utils_module.load = load_metafile
    try:
        yield
    finally:
        config_module._get_external_cfg_path = real
        utils_module.load = real_load


@contextlib.contextmanager
def memoised_install_check() -> Iterator[None]:
    """Memoise mmengine's check that the package of an ``mmdet::``-style
    base is installed: it reloads pkg_resources each time (0.05 to 0.2 s,
    several times per config). Whether a package is installed does not
    change during the run; the configs load exactly as without this."""
    from mmengine.config import config as config_module
    real = config_module.is_installed
    config_module.is_installed = functools.lru_cache(maxsize=None)(real)
    try:
        yield
    finally:
        config_module.is_installed = real


@contextlib.contextmanager
def unformatted_config_text() -> Iterator[None]:
    """Skip yapf's reformatting of ``Config.pretty_text``.

    A runner prints and dumps its config four times; yapf takes about 1 s
    each, a third of a small run. The text is still generated (and dumped,
    so a config that cannot be written still fails), only not re-indented.
    """
    from mmengine.config import config as config_module
    real = config_module.FormatCode
    config_module.FormatCode = lambda text, **kwargs: (text, False)
    try:
        yield
    finally:
        config_module.FormatCode = real


TORCH_ADD_PARAM_GROUP = torch.optim.Optimizer.add_param_group


@contextlib.contextmanager
def linear_param_group_check() -> Iterator[None]:
    """Check each new optimizer parameter group against one kept set.

    torch's ``add_param_group`` rebuilds the set of every earlier group's
    parameters for each new group (reading each group through mmengine's
    ``ConfigDict``): quadratic in mmengine's one group per parameter, a
    second or more per runner of a B model. Here torch validates the new
    group alone, and the two checks against the earlier groups (names on
    all or none, no parameter in two groups) run against a set kept per
    optimizer, rebuilt whenever its group list was replaced or changed
    elsewhere; the errors and the groups are torch's.
    """
    import weakref

    from torch.optim import Optimizer
    real = TORCH_ADD_PARAM_GROUP
    kept = weakref.WeakKeyDictionary()  # optimizer -> (list, count, set)

    def add_param_group(self, param_group):
        groups = self.param_groups
        entry = kept.get(self)
        if entry is None or entry[0] is not groups or \
                entry[1] != len(groups):
            seen = set()
            for group in groups:
                seen.update(group['params'])
            entry = (groups, len(groups), seen)
        self.param_groups = []
        try:
            real(self, param_group)  # validates and fills in the defaults
        finally:
            self.param_groups = groups
        if groups and ('param_names' in param_group) != \
                ('param_names' in groups[0]):
            which = 'with' if 'param_names' in param_group else 'without'
            raise ValueError(
                'all optimizer param groups should be with/without names. '
                f'cannot add param group {which} names to the optimizer')
        if not entry[2].isdisjoint(param_group['params']):
            raise ValueError(
                'some parameters appear in more than one parameter group')
        groups.append(param_group)
        entry[2].update(param_group['params'])
        kept[self] = (groups, len(groups), entry[2])

    Optimizer.add_param_group = add_param_group
    try:
        yield
    finally:
        Optimizer.add_param_group = real


@pytest.fixture(autouse=True)
def isolated_default_scope() -> Iterator[None]:
    """A test that sets mmengine's default scope (building a model from a
    config does) leaves it as it found it: a later test's registry look-up
    would otherwise go to that toolbox's registry, and pass or fail by the
    order the tests ran in."""
    from mmengine.registry import DefaultScope
    saved = dict(DefaultScope._instance_dict)
    yield
    DefaultScope._instance_dict.clear()
    DefaultScope._instance_dict.update(saved)


@pytest.fixture(scope='session', autouse=True)
def fast_config_handling() -> Iterator[None]:
    """Every test's configs and runners without the four costs above;
    what they load, build and run is unchanged."""
    with memoised_base_lookup(), memoised_install_check(), \
            unformatted_config_text(), linear_param_group_check():
        yield
