"""The authors' whole-model SparX-Mamba files (spec 1.6: their
``maskrcnn_sparx_mamba_{t,s,b}_fpn_{1x,3x}_coco.pth`` and
``upernet_sparx_mamba_{tiny,small,base}.pth``) load as they are into the
matching configs, every key used and none missing, through torch's and
mmengine's loaders, a Runner's ``load_from`` and ``tools/test.py``; the
converter tool turns them into mmsparx files; wrong ones are refused with
the fix named. The files are synthesised: backbone keys and shapes from
tests/data/official_keys (without ``classifier.*``) plus ``norm.{i}`` and,
in the COCO files, ``op.scale`` per ganglion layer; neck and head keys from
the model the config builds (mmdet / mmseg's own names); random values."""
import glob
import json
import os.path as osp
import re
from typing import Callable, Dict, Tuple

import pytest
import torch
from conftest import (ROOT, as_cli, coco_paper_options, load_test_config,
                      official_shapes)
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.runner import load_checkpoint
from mmengine.runner.checkpoint import _load_checkpoint_to_model
from torch import Tensor, nn

from mmsparx.fileio import CheckpointError
from mmsparx.converters.sparx_mamba import (convert_backbone_key,
                                            is_official_layout)

SIZES = ('t', 's', 'b')
COCO = [f'mask-rcnn_sparx-mamba-{s}_fpn_{schedule}_coco.py'
        for s in SIZES for schedule in ('1x', 'ms-crop-3x')]
ADE = [f'upernet_sparx-mamba-{s}_8xb2-160k_ade20k-512x512.py' for s in SIZES]
# Authors' key -> the mmsparx key it must land in, written out by hand
# (the ganglion layer 1 of stage 2 exists in T, S and B).
LANDING = {
    'backbone.patch_embed.0.weight': 'backbone.stem.0.weight',
    'backbone.layers.0.downsample.0.weight':
        'backbone.downsamples.1.0.weight',
    'backbone.layers.1.blocks.1.op.d_norm.weight':
        'backbone.stages.1.blocks.1.op.in_proj.d_norm.weight',
    'backbone.layers.1.blocks.1.op.in_proj.2.weight':
        'backbone.stages.1.blocks.1.op.in_proj.fuse.2.weight',
    'backbone.layers.3.blocks.0.mlp.fc1.weight':
        'backbone.stages.3.blocks.0.mlp.fc1.weight',
    'backbone.norm.3.weight': 'backbone.out_norms.3.weight',
}
COCO_LANDING = {'backbone.layers.1.blocks.1.op.scale':
                'backbone.stages.1.blocks.1.op.in_proj.scale'}


def config_path(name: str) -> str:
    return osp.join(ROOT, 'configs', 'sparx', name)


def build_model(cfg: Config) -> nn.Module:
    """The detector / segmentor of ``cfg``, without its ImageNet weights."""
    if cfg.default_scope == 'mmdet':
        from mmdet.registry import MODELS
    else:
        from mmseg.registry import MODELS
    model = cfg.model.copy()
    model.backbone = dict(model.backbone, init_cfg=None)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        return MODELS.build(model)


def authors_state(model: nn.Module, size: str, coco: bool,
                  seed: int = 0) -> Dict[str, Tensor]:
    """A whole-model file as the authors save it for ``model`` (random
    values, small enough for a finite forward pass)."""
    shapes = {'backbone.' + k: s
              for k, s in official_shapes(f'sparx_mamba_{size}').items()
              if not k.startswith('classifier.')}
    for key, shape in list(shapes.items()):
        stage = re.match(r'backbone\.layers\.(\d)\.blocks\.0\.norm\.weight$',
                         key)
        if stage:
            for part in ('weight', 'bias'):
                shapes[f'backbone.norm.{stage.group(1)}.{part}'] = shape
        ganglion = re.match(r'(backbone\.layers\.\d\.blocks\.\d+\.op)\.'
                            r'd_norm\.weight$', key)
        if ganglion and coco:
            shapes[ganglion.group(1) + '.scale'] = (1, )
    shapes.update({k: tuple(v.shape) for k, v in model.state_dict().items()
                   if not k.startswith('backbone.')})
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith('num_batches_tracked'):
            state[key] = torch.randint(1, 1000, shape, generator=g)
        elif key.endswith('running_var'):
            state[key] = 1 + torch.rand(shape, generator=g)
        else:
            state[key] = 0.02 * torch.randn(shape, generator=g)
    return state


def mmsparx_key(key: str) -> str:
    if not key.startswith('backbone.'):
        return key
    return 'backbone.' + convert_backbone_key(key[len('backbone.'):])


def wipe(model: nn.Module) -> None:
    """Zero every tensor, so a later check sees only what a load wrote."""
    with torch.no_grad():
        for value in model.state_dict().values():
            value.zero_()


def assert_landed(model: nn.Module, state: Dict[str, Tensor],
                  coco: bool) -> None:
    """Each file tensor sits in its parameter, and every parameter and
    buffer of the model came from the file."""
    own = model.state_dict()
    mapped = {mmsparx_key(k): v for k, v in state.items()}
    assert sorted(mapped) == sorted(own)
    for key, value in mapped.items():
        assert torch.equal(own[key], value.to(own[key].dtype)), key
    pairs = dict(LANDING, **(COCO_LANDING if coco else {}))
    neck = next(k for k in state if not k.startswith('backbone.'))
    pairs[neck] = neck
    for authors, ours in pairs.items():
        assert torch.equal(own[ours], state[authors]), (authors, ours)


@pytest.fixture(scope='module')
def built() -> Callable[[str], Tuple[nn.Module, Dict[str, Tensor]]]:
    """config name -> (model, authors' file for it); configs with equal
    model settings (a size's 1x and 3x) share one build."""
    cache: Dict[str, Tuple[nn.Module, Dict[str, Tensor]]] = {}
    by_name: Dict[str, Tuple[nn.Module, Dict[str, Tensor]]] = {}

    def get(name: str) -> Tuple[nn.Module, Dict[str, Tensor]]:
        if name in by_name:
            return by_name[name]
        cfg = Config.fromfile(config_path(name))
        key = json.dumps(cfg.model.to_dict(), sort_keys=True, default=str)
        if key not in cache:
            model = build_model(cfg)
            size = re.search(r'sparx-mamba-(\w)_', name).group(1)
            cache[key] = model, authors_state(model, size, name in COCO)
        by_name[name] = cache[key]
        return cache[key]
    return get


@pytest.mark.parametrize('name', COCO + ADE)
def test_config_loads_the_authors_file(name, built):
    model, state = built(name)
    coco = name in COCO
    assert any(k.endswith('.op.scale') for k in state) == coco
    assert model.backbone.dmca_scale == ('learned' if coco else 'input')
    # torch's own loader, strict: no missing and no unexpected key.
    wipe(model)
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert_landed(model, state, coco)
    # mmengine's (what load_checkpoint and Runner.load_checkpoint do with
    # the file's contents), bare and inside state_dict with meta; strict
    # raises on any missing or unexpected key.
    for checkpoint in (state, {'state_dict': state, 'meta': {'epoch': 12}}):
        wipe(model)
        _load_checkpoint_to_model(model, checkpoint, strict=True)
        assert_landed(model, state, coco)
    assert 'backbone.patch_embed.0.weight' in state  # the input is kept


def test_files_in_both_formats_load_with_load_checkpoint(built, tmp_path):
    model, state = built(COCO[0])
    for name, saved in (('bare', state), ('wrapped', {
            'state_dict': state, 'meta': {'epoch': 12}})):
        path = str(tmp_path / f'{name}.pth')
        torch.save(saved, path)
        wipe(model)
        load_checkpoint(model, path, strict=True)
        assert_landed(model, state, coco=True)


def test_mmsparx_load_state_dict_reads_the_authors_file(built):
    from mmsparx.fileio import load_state_dict
    model, state = built(ADE[0])
    wipe(model)
    assert load_state_dict(model, state, strict=True).ok
    assert_landed(model, state, coco=False)


def test_ade20k_file_into_a_learned_detector_names_the_fix(built):
    _, ade = built(ADE[0])
    detector, _ = built(COCO[0])
    with pytest.raises(CheckpointError, match=r"no learned DMCA softmax "
                       r"scales \(op\.scale\).*dmca_scale='input'") as err:
        _load_checkpoint_to_model(detector, {'state_dict': ade})
    assert "init_cfg=dict(type='Pretrained'" in str(err.value)


def test_coco_file_into_an_input_model_names_the_fix(built):
    _, coco = built(COCO[0])
    segmentor, _ = built(ADE[0])
    with pytest.raises(CheckpointError, match="holds 7 learned DMCA softmax "
                       r"scales.*dmca_scale='learned'"):
        _load_checkpoint_to_model(segmentor, coco)


def test_other_variant_names_the_variant(built):
    _, tiny = built(COCO[0])
    small, _ = built(COCO[2])
    with pytest.raises(CheckpointError, match="SparX-Mamba-T checkpoint but "
                       "the model is SparX-Mamba-S.*use arch='tiny'"):
        small.load_state_dict(tiny)


def test_convert_tool_writes_a_file_that_loads_strictly(built, tmp_path):
    from tools.model_converters.sparx_mamba import main
    model, state = built(COCO[0])
    src, dst = str(tmp_path / 'coco.pth'), str(tmp_path / 'mmsparx.pth')
    torch.save({'state_dict': state, 'meta': {'epoch': 12}}, src)
    main([src, dst])
    converted = torch.load(dst, weights_only=True)
    assert converted['meta']['dmca_scale'] == 'learned'
    assert not is_official_layout(converted['state_dict'])
    wipe(model)
    load_checkpoint(model, dst, strict=True)
    assert_landed(model, state, coco=True)


# -- a Runner's load_from and tools/test.py on generated COCO data -----------
@pytest.fixture(scope='module')
def small_coco(coco_root, tmp_path_factory) -> Tuple[dict, str, dict]:
    """(config options, authors' file, its state): the SparX-Mamba-T 1x
    config on the generated data (3 classes, small images) and the file
    the authors would have trained for it."""
    options = dict(coco_paper_options(coco_root), **{
        'test_dataloader.num_workers': 0,
        'test_dataloader.persistent_workers': False})
    cfg = Config.fromfile(config_path(COCO[0]))
    cfg.merge_from_dict(options)
    state = authors_state(build_model(cfg), 't', coco=True, seed=1)
    checkpoint = tmp_path_factory.mktemp('dense') / \
        'maskrcnn_sparx_mamba_t_fpn_1x_coco.pth'
    torch.save({'state_dict': state, 'meta': {'epoch': 12}}, checkpoint)
    return options, str(checkpoint), state


def test_load_from_through_a_runner(small_coco, tmp_path):
    from mmsparx.apis import build_runner, prepare_device
    options, checkpoint, state = small_coco
    cfg = load_test_config(config_path(COCO[0]), options, tmp_path)
    cfg.load_from = checkpoint
    runner = build_runner(cfg, config_path(COCO[0]), prepare_device(cfg))
    wipe(runner.model)
    runner.load_or_resume()
    assert_landed(runner.model, state, coco=True)


def flat(options: dict) -> dict:
    """Dict values as one option per entry (--cfg-options takes no dict).
    """
    out = {}
    for key, value in options.items():
        if isinstance(value, dict):
            out.update({f'{key}.{k}': v for k, v in value.items()})
        else:
            out[key] = value
    return out


def test_tools_test_runs_the_authors_file(small_coco, tmp_path, capfd):
    """tools/test.py's main (in this process: the command line's exit
    status and refusals are test_strict_load's) tests the authors' file
    on one generated image: converted on load, every key matched, the
    COCO metric computed."""
    from tools import test as test_tool
    options, checkpoint, _ = small_coco
    options = dict(options, **{'test_dataloader.dataset.indices': 1})
    test_tool.main([config_path(COCO[0]), checkpoint, '--work-dir',
                    str(tmp_path), *as_cli(flat(options))])
    out, err = capfd.readouterr()
    output = out + err + ''.join(
        open(f).read() for f in glob.glob(str(tmp_path / '*' / '*.log')))
    assert "renamed the 676 keys under 'backbone.'" in output
    assert 'do not match exactly' not in output  # mmengine's key warning
    assert 'coco/segm_mAP' in output
