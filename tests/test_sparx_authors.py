"""SparX-Mamba against the authors' own code: golden outputs of their
classification (T-like, S-like), detection (learned DMCA scale) and
segmentation models on small random-weight models (tests/data/sparx_authors,
see its README), converted, loaded strictly and run on every scan backend
here. The tolerance is the fixtures' own: 1e-4 absolute on logits and maps
(their float64 recomputation differs by <= 5e-6). The figures:
``python tools/analysis_tools/sparx_parity.py``."""
import os.path as osp

import pytest
import torch

from mmsparx.archs.sparx import arch_from_authors, layer_signature
from mmsparx.fileio import load_state_dict
from mmsparx.converters.loading import load_backbone
from mmsparx.converters.sparx_mamba import (convert_sparx_mamba, infer_arch,
                                            is_official_layout)
from mmsparx.models.backbones import SparXMamba
from mmsparx.models.layers.dmca import LEARNED_SCALE_INIT, channel_shuffle
from mmsparx.ops import available_backends
from tools.analysis_tools.sparx_parity import (FIXTURES, TOLERANCE, build,
                                               converted_state, differences)

NAMES = ['cls_tiny_like', 'cls_small_like', 'det_tiny_like', 'seg_tiny_like']
DEVICES = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])
BACKENDS = [(dev, name) for dev in DEVICES for name in available_backends(dev)]


def fixture(name: str) -> dict:
    return torch.load(osp.join(FIXTURES, f'{name}.pt'), weights_only=True)


def scale_of(name: str) -> str:
    return 'learned' if name.startswith('det') else 'input'


def assert_reproduces(model, data: dict, device: str = 'cpu') -> None:
    diffs = differences(model, data, device)
    assert max(diffs) < TOLERANCE, f'max abs differences {diffs}'


@pytest.mark.parametrize('device,backend', BACKENDS)
@pytest.mark.parametrize('name', NAMES)
def test_converted_weights_reproduce_the_authors_outputs(name, device,
                                                         backend):
    data = fixture(name)
    model = build(data, backend=backend)
    assert load_state_dict(model, converted_state(data, model),
                           strict=True).ok
    assert_reproduces(model, data, device)


# A crop of the dense fixture's input (a sixth of its tokens): under
# Triton's interpreter the whole input costs minutes per model.
CROP = (32, 64)
# The backend the crop's answer comes from: the per-token loop, which
# reproduces every fixture above.
TRUSTED = 'reference'


@pytest.mark.parametrize('device,backend',
                         [b for b in BACKENDS if b != ('cpu', TRUSTED)])
def test_every_backend_runs_the_authors_model_as_the_reference(device,
                                                               backend):
    """The authors' dense model (converted weights) through each backend
    gives the per-token loop's maps on a crop of the fixture's input; the
    loop gives the authors' own maps (the test above), so each backend
    does, within the fixtures' tolerance, wherever it runs the whole
    model."""
    data = fixture('seg_tiny_like')
    x = data['input'][..., :CROP[0], :CROP[1]]
    maps = []
    for name, dev in ((TRUSTED, 'cpu'), (backend, device)):
        model = build(data, backend=name)
        assert load_state_dict(model, converted_state(data, model),
                               strict=True).ok
        with torch.no_grad():
            maps.append([m.float().cpu()
                         for m in model.to(dev).eval()(x.to(dev))])
    assert [m.shape[-2:] for m in maps[0]] == [(8, 16), (4, 8), (2, 4),
                                               (1, 2)]
    diffs = [(a - b).abs().max().item() for a, b in zip(*maps)]
    assert max(diffs) < TOLERANCE, f'max abs differences {diffs}'


@pytest.mark.parametrize('name', NAMES)
def test_arch_is_read_off_the_file(name):
    data = fixture(name)
    arch, kwargs = infer_arch(data['state_dict'])
    assert layer_signature(arch) == layer_signature(
        arch_from_authors(data['arch']))
    assert kwargs['dmca_scale'] == scale_of(name)


@pytest.mark.parametrize('name', NAMES)
def test_convert_tool_output_reproduces_the_authors_outputs(name, tmp_path):
    from tools.model_converters.sparx_mamba import convert_file
    src = tmp_path / f'{name}.pth'
    data = fixture(name)
    torch.save(data['state_dict'], src)
    dst = tmp_path / 'converted.pth'
    summary = convert_file(str(src), str(dst))
    assert summary['dmca_scale'] == scale_of(name)
    saved = torch.load(dst, weights_only=True)
    assert saved['meta']['dmca_scale'] == summary['dmca_scale']
    model = build(data, saved['meta']['arch'])
    state = saved['state_dict']
    if not name.startswith('cls'):
        state = {k[len('backbone.'):]: v for k, v in state.items()}
    assert load_state_dict(model, state, strict=True).ok
    assert_reproduces(model, data)


@pytest.mark.parametrize('name', NAMES)
def test_init_cfg_loads_the_authors_file_and_reproduces(name, tmp_path):
    data = fixture(name)
    src = tmp_path / f'{name}.pth'
    # Dense files as the authors' mmdet/mmseg save them: whole-model keys
    # inside state_dict, with meta and the neck's keys.
    if name.startswith('cls'):
        torch.save(data['state_dict'], src)
    else:
        state = {f'backbone.{k}': v for k, v in data['state_dict'].items()}
        state['neck.lateral_convs.0.conv.weight'] = torch.zeros(4, 6, 1, 1)
        torch.save({'state_dict': state, 'meta': {'epoch': 12}}, src)
    model = build(data, init_cfg=dict(type='Pretrained',
                                      checkpoint=str(src)))
    backbone = model.backbone if name.startswith('cls') else model
    report = load_backbone(backbone, str(src))
    assert not report.missing and not report.unexpected
    assert not report.mismatched
    if name.startswith('cls'):
        # The classifier head is reported, not dropped without a word.
        assert report.unused == ['head.fc.bias', 'head.fc.weight']
        backbone.init_weights()
        head = convert_sparx_mamba(data['state_dict'])
        model.head.fc.load_state_dict({'weight': head['head.fc.weight'],
                                       'bias': head['head.fc.bias']})
    else:
        assert report.unused == ['neck.lateral_convs.0.conv.weight']
        model.init_weights()
    assert_reproduces(model, data)


def test_learned_scales_need_dmca_scale_learned(tmp_path):
    data = fixture('det_tiny_like')
    src = tmp_path / 'det.pth'
    torch.save(data['state_dict'], src)
    model = SparXMamba(arch_from_authors(data['arch']), init_cfg=dict(
        type='Pretrained', checkpoint=str(src)))
    with pytest.raises(ValueError, match="dmca_scale='learned'"):
        model.init_weights()


def test_learned_scales_start_at_the_authors_value_from_a_classifier(
        tmp_path):
    data = fixture('cls_tiny_like')
    src = tmp_path / 'cls.pth'
    torch.save(data['state_dict'], src)
    model = SparXMamba(arch_from_authors(data['arch']), dmca_scale='learned',
                       init_cfg=dict(type='Pretrained', checkpoint=str(src)))
    model.init_weights()
    scales = [p for n, p in model.named_parameters() if n.endswith('.scale')]
    assert len(scales) == 7  # one per ganglion layer of the T layout
    assert all(p.item() == pytest.approx(LEARNED_SCALE_INIT) for p in scales)
    assert LEARNED_SCALE_INIT == pytest.approx(0.0310, abs=1e-4)


def test_learned_scale_is_trained():
    model = SparXMamba(dict(depths=(1, 2, 3, 2), channels=(16, 32, 48, 64),
                            stem='v1', strides=(1, 1, 2, 1),
                            ganglion_start=(None, 1, 0, 0)),
                       dmca_scale='learned', drop_path_rate=0.0).train()
    torch.manual_seed(0)
    outs = model(torch.randn(2, 3, 96, 96))
    sum((o * torch.randn_like(o)).sum() for o in outs).backward()
    grads = {n: p.grad for n, p in model.named_parameters()
             if n.endswith('.scale')}
    assert grads and all(g is not None and g.abs().item() > 0
                         for g in grads.values())


def test_dense_file_with_scales_is_an_authors_layout():
    state = fixture('det_tiny_like')['state_dict']
    assert is_official_layout(state)
    converted = convert_sparx_mamba(state)
    assert 'backbone.stages.3.blocks.1.op.in_proj.scale' in converted


def test_channel_shuffle_is_the_authors_regrouping():
    # '(c g) -> (g c)' with g = 3: output g*C + c is input 3c + g.
    x = torch.arange(6.).view(1, 6, 1, 1)
    assert channel_shuffle(x, 3).flatten().tolist() == [0, 3, 1, 4, 2, 5]


def test_bad_dmca_scale_names_the_choices():
    with pytest.raises(ValueError, match="'input', 'learned'"):
        SparXMamba('t', dmca_scale='fixed')
