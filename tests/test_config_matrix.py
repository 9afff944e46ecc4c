"""Every config under configs/ builds, and every dense and ImageNet config
trains one iteration and evaluates once through the real runner.

1. ``test_config_builds``: each file (all folders but the partial bases in
   configs/_base_) loads, names its toolbox, and its model builds through
   that toolbox's registry (no pretrained file). A 64x64 forward of the
   backbone gives its real output channels, which the neck / heads must
   take; the backbone's type, variant and DMCA scale mode are the ones the
   file name and the paper say.
2. ``test_*_trains_one_iteration``: each Mask R-CNN, UperNet, Semantic FPN
   and ImageNet config (ablations included; the demo configs have their own
   tests) trains one iteration on generated data and then runs its own
   validation loop and metric (CocoMetric, IoUMetric, Accuracy) on one or
   two images. The configs run as shipped (schedules, hooks, model) but
   for the data (and so the detectors' class count), the image sizes in
   their pipelines, the batch and worker counts and checkpoint writing
   (off). The runs stop after the first validation, so the schedules are
   built with the configs' own lengths.

The 3x (multi-scale crop) detectors build the same models as their 1x
files (only the pipeline and the schedule differ): their models are checked
by ``test_config_builds`` and their training pipelines by
``test_3x_train_pipeline``, not trained again. The four top-level files are
shims of configs in the family folders: they only build and must equal
their targets.
"""
from __future__ import annotations

import gc
import glob
import importlib
import os
import os.path as osp
import re
from typing import Dict, Iterator, List, Optional, Tuple

import pytest
import torch
from mmengine.config import Config

from conftest import ROOT

CONFIG_DIR = osp.join(ROOT, 'configs')
SCOPE = {'det': 'mmdet', 'seg': 'mmseg', 'cls': 'mmpretrain'}
# The short top-level paths and the configs they inherit unchanged.
SHIMS = {
    'maskrcnn_sparx_t_1x.py': 'sparx/mask-rcnn_sparx-mamba-t_fpn_1x_coco.py',
    'maskrcnn_sparx_t_3x.py':
        'sparx/mask-rcnn_sparx-mamba-t_fpn_ms-crop-3x_coco.py',
    'maskrcnn_spartan_t_1x.py': 'spartan/mask-rcnn_spartan-t_fpn_1x_coco.py',
    'upernet_spartan_t_160k_ade20k.py':
        'spartan/upernet_spartan-t_8xb2-160k_ade20k-512x512.py',
}
# Variant named in a file name -> (backbone type, depths, output channels),
# from the papers' tables (SparX Table 1 and 9, SpaRTAN Table I, SparseSwin
# section 3 with the dense stride-32 map of width e = 512).
VARIANTS = {
    'sparx-mamba-t': ('SparXMamba', (2, 2, 7, 2), (96, 192, 320, 512)),
    'sparx-mamba-s': ('SparXMamba', (2, 2, 17, 2), (96, 192, 328, 544)),
    'sparx-mamba-b': ('SparXMamba', (2, 2, 21, 3), (120, 240, 396, 636)),
    'sparx-swin-t': ('SparXSwin', (2, 2, 7, 2), (96, 192, 320, 576)),
    'sparx-swin-b': ('SparXSwin', (2, 2, 27, 3), (120, 240, 396, 616)),
    'spartan-xt': ('SpaRTAN', (3, 3, 10, 2), (32, 64, 96, 192)),
    'spartan-t': ('SpaRTAN', (3, 3, 12, 2), (32, 64, 128, 256)),
    'sparseswin-t': ('SparseSwin', (2, 2, 6), (96, 192, 384, 512)),
    'r18': ('ResNet', (2, 2, 2, 2), (64, 128, 256, 512)),
    # The demo's CPU-sized SparX-Mamba and the Swin of its size (mmdet's).
    'sparx-mamba-demo': ('SparXMamba', (1, 1, 3, 1), (48, 96, 192, 288)),
    'swin-demo': ('SwinTransformer', (1, 1, 3, 1), (48, 96, 192, 384)),
}
VARIANT = re.compile('|'.join(VARIANTS))
# Demo files whose names do not follow the family folders' pattern.
DEMO_VARIANTS = {
    'demo/maskrcnn_sparx_t_fpn_shapes.py': 'sparx-mamba-t',
    'demo/maskrcnn_spartan_xt_fpn_shapes.py': 'spartan-xt',
    'demo/maskrcnn_swin_small_fpn_shapes.py': 'swin-demo',
    **{f'demo/maskrcnn_sparx_small{kind}_fpn_shapes.py': 'sparx-mamba-demo'
       for kind in ('', '_learned', '_ln', '_sgd')},
}
# What each ablation's name promises of the built SparX-Mamba-T / SpaRTAN-XT
# (Table 7: window M, stride S, PlainNet; Table VIII: convolution types).
T_GANGLIA = ([], [1], [0, 2, 4, 6], [0, 1])
ABLATIONS = {
    'm2': dict(window=(2, ) * 4, ganglia=T_GANGLIA),
    'm4': dict(window=(4, ) * 4, ganglia=T_GANGLIA),
    's1': dict(window=(3, ) * 4, ganglia=([], [1], list(range(7)), [0, 1])),
    's3': dict(window=(3, ) * 4, ganglia=([], [1], [0, 3, 6], [0, 1])),
    's4': dict(window=(3, ) * 4, ganglia=([], [1], [2, 6], [0, 1])),
    'plainnet': dict(ganglia=([], ) * 4, channels=(96, 192, 384, 576)),
    'dw': dict(conv_types=('D', ) * 4),
    'full': dict(conv_types=('F', ) * 4),
}
# The published models, where the ablations differ from them.
PUBLISHED = {
    'sparx-mamba-t': dict(window=(3, ) * 4, ganglia=T_GANGLIA),
    'spartan-xt': dict(conv_types=('F', 'F', 'D', 'D')),
    'spartan-t': dict(conv_types=('F', 'F', 'D', 'D')),
}
SPARX = ('SparXMamba', 'SparXSwin')
SMALL_DET = (160, 128)  # the generated COCO images' own size (w, h)
SMALL_SEG = 64  # crop side; test images resized to a 64 short side
SMALL_CLS = 64  # crop side (SparseSwin's classifier needs its 224)


def config_names() -> List[str]:
    """Every config file, relative to configs/, the partial bases left out.
    """
    paths = glob.glob(osp.join(CONFIG_DIR, '**', '*.py'), recursive=True)
    names = sorted(osp.relpath(p, CONFIG_DIR).replace(os.sep, '/')
                   for p in paths)
    # RT-DETR's configs have their own runs (tests/test_rtdetr_configs.py).
    return [n for n in names if not n.startswith(('_base_/', 'rtdetr/'))
            and not osp.basename(n).startswith('rtdetr_')]


def task(name: str) -> str:
    """'det', 'seg' or 'cls', from the file name."""
    base = osp.basename(name)
    if base.startswith(('mask-rcnn_', 'maskrcnn_')):
        return 'det'
    if base.startswith(('upernet_', 'fpn_')):
        return 'seg'
    return 'cls'


def variant(name: str) -> str:
    """The VARIANTS key a config's file name names."""
    if name in DEMO_VARIANTS:
        return DEMO_VARIANTS[name]
    name = SHIMS.get(name, name)
    found = VARIANT.search(osp.basename(name))
    assert found, f'{name}: no known variant in the file name'
    return found.group(0)


def ablation(name: str) -> Optional[str]:
    """The ABLATIONS key of a configs/*/ablations/ file, else None."""
    if '/ablations/' not in name:
        return None
    rest = osp.basename(name)[VARIANT.search(osp.basename(name)).end():]
    key = rest.lstrip('-').split('_')[0]
    assert key in ABLATIONS, f'{name}: unknown ablation {key!r}'
    return key


ALL = config_names()
TRAINED = [n for n in ALL if '/' in n and not n.startswith('demo/')]
DET = [n for n in TRAINED if task(n) == 'det' and '3x' not in n]
DET_3X = [n for n in TRAINED if task(n) == 'det' and '3x' in n]
SEG = [n for n in TRAINED if task(n) == 'seg']
CLS = [n for n in TRAINED if task(n) == 'cls']


@pytest.fixture
def free_runner() -> Iterator[None]:
    """Collect the test's runner after it: runners sit in reference cycles
    that Python frees late, and a B model with its optimiser is 1-2 GB
    (the file peaks near 6 GB without this, 3 GB with it)."""
    yield
    gc.collect()


def load(name: str) -> Config:
    return Config.fromfile(osp.join(CONFIG_DIR, name))


def build_model(cfg: Config) -> torch.nn.Module:
    """The config's model through its toolbox's registry, as the Runner
    builds it (a top-level data_preprocessor merged in), no pretrained
    file."""
    from mmengine.registry import DefaultScope
    model = cfg.model
    model.backbone.init_cfg = None
    if cfg.get('data_preprocessor') is not None:
        model.setdefault('data_preprocessor', cfg.data_preprocessor)
    registry = importlib.import_module(f'{cfg.default_scope}.registry')
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        return registry.MODELS.build(model)


def output_shapes(backbone: torch.nn.Module) -> List[Tuple[int, ...]]:
    """(C, H, W) or (C, ) of each output for one 64x64 image (224x224 for
    the SparseSwin classifier, whose token map is learned for that size)."""
    side = 224 if type(backbone).__name__ == 'SparseSwin' else 64
    backbone.eval()
    with torch.no_grad():
        outs = backbone(torch.rand(1, 3, side, side))
    if isinstance(outs, torch.Tensor):
        outs = (outs, )
    return [tuple(o.shape[1:]) for o in outs]


def arch_facts(backbone: torch.nn.Module) -> Dict[str, tuple]:
    """What the built backbone is: its depths and, where it has them, its
    ganglion layers, windows (M) and convolution types."""
    arch = getattr(backbone, 'arch', {})
    facts = {}
    if 'depths' in arch:
        facts['depths'] = tuple(arch['depths'])
    if hasattr(backbone, 'ganglia'):
        facts['ganglia'] = tuple(backbone.ganglia(i) for i in range(4))
        facts['window'] = tuple(arch['window'])
    if 'conv_types' in arch:
        facts['conv_types'] = tuple(arch['conv_types'])
    return facts


def expected_facts(name: str) -> dict:
    """The facts ``arch_facts`` must give for the config ``name``."""
    key = variant(name)
    facts = dict(depths=VARIANTS[key][1], **PUBLISHED.get(key, {}))
    facts.update(ABLATIONS.get(ablation(name), {}))
    facts.pop('channels', None)
    if key in ('r18', 'swin-demo'):
        facts.pop('depths')  # mmdet's ResNet and Swin have no arch dict
    return facts


def expected_channels(name: str) -> Tuple[int, ...]:
    """The output widths of the named variant (or ablation)."""
    return ABLATIONS.get(ablation(name), {}).get(
        'channels', VARIANTS[variant(name)][2])


def check_heads(name: str, cfg: Config, model: torch.nn.Module,
                real: Tuple[int, ...]) -> None:
    """The neck / heads take the backbone's real widths; the class counts
    are the datasets' (COCO 80, ADE20K 150, ImageNet 1000, ...)."""
    kind = task(name)
    if kind == 'det':
        assert type(model).__name__ == 'MaskRCNN'
        assert tuple(cfg.model.neck.in_channels) == real
        assert model.roi_head.bbox_head.num_classes == (
            3 if name.startswith('demo/') else 80)
    elif kind == 'seg':
        head = cfg.model.decode_head
        assert model.decode_head.num_classes == 150
        if head.type == 'UPerHead':
            assert tuple(head.in_channels) == real
            assert cfg.model.auxiliary_head.in_channels == real[2]
        else:
            assert head.type == 'FPNHead'
            assert tuple(cfg.model.neck.in_channels) == real
    else:
        assert type(model).__name__ == (
            'SparseSwinClassifier' if variant(name) == 'sparseswin-t'
            else 'ImageClassifier')
        assert cfg.model.head.in_channels == real[0]
        classes = {'cifar10': 10, 'cifar100': 100, 'in100': 100}
        assert model.head.num_classes == classes.get(
            name[:-3].rsplit('_', 1)[-1], 1000)
        # Mixup / CutMix and the one-hot labels need the same count.
        assert cfg.data_preprocessor.num_classes == model.head.num_classes


@pytest.mark.parametrize('name', ALL)
def test_config_builds(name):
    cfg = load(name)
    kind = task(name)
    assert cfg.default_scope == SCOPE[kind], name
    assert 'mmsparx' in cfg.custom_imports['imports']
    model = build_model(cfg)
    backbone = model.backbone
    family = VARIANTS[variant(name)][0]
    dense = kind != 'cls'
    if family == 'SparseSwin' and dense:
        family = 'SparseSwinDense'
    assert type(backbone).__name__.startswith(family)
    facts, expected = arch_facts(backbone), expected_facts(name)
    assert {key: facts.get(key) for key in expected} == expected
    shapes = output_shapes(backbone)
    real = tuple(s[0] for s in shapes)
    if dense:
        assert real == expected_channels(name)
        assert [s[1:] for s in shapes] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    else:
        assert real == expected_channels(name)[-1:]
    check_heads(name, cfg, model, real)
    if family in SPARX and not name.startswith('demo/'):
        # The authors' detector learns DMCA's softmax scale; their
        # classifiers and segmenters compute it from each input.
        mode = 'learned' if kind == 'det' else 'input'
        assert backbone.dmca_scale == mode
        learned = [k for k, _ in backbone.named_parameters()
                   if k.endswith('in_proj.scale')]
        ganglia = sum(len(g) for g in arch_facts(backbone)['ganglia'])
        assert len(learned) == (ganglia if mode == 'learned' else 0)


@pytest.mark.parametrize('shim', sorted(SHIMS))
def test_shim_is_its_target(shim):
    assert shim in ALL
    assert load(shim).to_dict() == load(SHIMS[shim]).to_dict()


def test_every_config_is_covered():
    """Every trained file is in exactly one run list; nothing unmatched."""
    assert sorted(DET + DET_3X + SEG + CLS) == sorted(TRAINED)
    assert len(DET_3X) == 5 and all(
        n.replace('ms-crop-3x', '1x') in DET for n in DET_3X)
    assert {SHIMS[s] for s in SHIMS} <= set(TRAINED)
