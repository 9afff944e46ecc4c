"""The effective-receptive-field measurement (mmsparx.analysis.erf) against
models whose receptive field is known exactly, its area shares against
maps whose answer is known, the backbones it builds and loads, and
tools/analysis_tools/erf.py drawing SparX-Mamba-T beside Swin-T."""
import importlib.util
import os.path as osp

import numpy as np
import pytest
import torch
from torch import nn

from mmsparx.analysis.erf import (THRESHOLDS, ERFInputError, area_fractions,
                                  erf_maps, log_normalise)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
# An odd multiple of 32: the centre cell of every stage (strides 4-32) lies
# on the image centre, as at 224.
SIZE = 96


def _conv(cin: int, cout: int, stride: int = 1, weight=None) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
    with torch.no_grad():
        if weight is None:
            conv.weight.fill_(1.0)
        else:
            conv.weight.copy_(weight(conv.weight.shape))
        conv.bias.fill_(1.0)
    return conv


def test_two_unit_convs_give_the_exact_triangle():
    # conv3x3(3 -> 2) then conv3x3(2 -> 4), all weights 1, positive inputs
    # (so the ReLU passes): d out / d x at offset (dy, dx) from the centre
    # counts the paths, 4 * 2 * t(dy) * t(dx) per input channel with
    # t = (1, 2, 3, 2, 1) on -2..2, i.e. a 5x5 receptive field.
    model = nn.Sequential(_conv(3, 2), _conv(2, 4))
    images = torch.rand(2, 3, 15, 15) + 0.1
    erf, = erf_maps(model, images)
    tent = np.array([1, 2, 3, 2, 1], dtype=np.float64)
    expected = np.zeros((15, 15))
    expected[5:10, 5:10] = 3 * 4 * 2 * np.outer(tent, tent)
    np.testing.assert_array_equal(erf, expected)
    # 'relu' keeps positive gradients only: here all are.
    np.testing.assert_array_equal(erf_maps(model, images,
                                           gradient='relu')[0], expected)


def test_strided_stack_is_nonzero_exactly_inside_its_field():
    # conv3x3/2 then conv3x3 on 16x16: the 8x8 output's centre (4, 4) reads
    # conv1 cells 3..5, and cell p reads input 2p-1..2p+1: rows and columns
    # 5..11, a 7x7 field (1 + 2 * 1 + 2 * 2 * 1).
    torch.manual_seed(0)
    positive = lambda shape: torch.rand(shape) + 0.1  # noqa: E731
    model = nn.Sequential(_conv(3, 2, 2, positive), _conv(2, 3, 1, positive))
    images = torch.rand(3, 3, 16, 16)
    for batch_size in (1, 3):
        erf, = erf_maps(model, images, batch_size=batch_size)
        inside = np.zeros((16, 16), dtype=bool)
        inside[5:12, 5:12] = True
        np.testing.assert_array_equal(erf > 0, inside)
    # The map of one batch of three equals the map image by image.
    np.testing.assert_allclose(erf_maps(model, images, batch_size=1)[0],
                               erf, rtol=1e-6)


def test_every_output_of_a_tuple_and_refusals():
    class TwoMaps(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = _conv(3, 2), _conv(2, 2)

        def forward(self, x):
            first = self.a(x)
            return first, self.b(first), first.mean(dim=(2, 3))

    images = torch.rand(1, 3, 9, 9) + 0.1
    first, second = erf_maps(TwoMaps(), images, outputs=(0, 1))
    # 3x3 then 5x5 fields around the centre (4, 4).
    assert (first > 0).sum() == 9 and (second > 0).sum() == 25
    with pytest.raises(ERFInputError, match='not \\(N, C, H, W\\)'):
        erf_maps(TwoMaps(), images, outputs=(2, ))
    negative = nn.Sequential(_conv(3, 2, weight=lambda s: -torch.ones(s)))
    with pytest.raises(ERFInputError, match='no image moved'):
        erf_maps(negative, torch.rand(1, 3, 9, 9) + 1.0)


def test_log_normalise_and_area_fractions_on_known_maps():
    np.testing.assert_allclose(
        log_normalise(np.array([[0.0, 9.0], [99.0, 999.0]])),
        [[0.0, 1 / 3], [2 / 3, 1.0]])
    delta = np.zeros((21, 21))
    delta[10, 10] = 5.0
    assert area_fractions(delta) == {t: 1 / 441 for t in THRESHOLDS}
    # Uniform 21x21: the smallest centred odd square of side s with
    # s^2 >= 441 t: 11 for 20 % (88.2), 13 for 30 % (132.3), 15 for 50 %
    # (220.5), 21 for 99 % (436.6).
    fractions = area_fractions(np.ones((21, 21)))
    assert fractions == {0.2: 121 / 441, 0.3: 169 / 441, 0.5: 225 / 441,
                         0.99: 1.0}
    with pytest.raises(ERFInputError):
        area_fractions(np.zeros((5, 5)))


def _tool():
    spec = importlib.util.spec_from_file_location(
        'erf_tool', osp.join(ROOT, 'tools', 'analysis_tools', 'erf.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def cli_run(tmp_path_factory):
    """The tool on SparX-Mamba-T and Swin-T, stages 0 and 3, one generated
    image: (stdout, the saved raw maps, the PNG)."""
    import contextlib
    import io
    out = tmp_path_factory.mktemp('erf')
    png, npz = str(out / 'erf.png'), str(out / 'maps.npz')
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert _tool().main([
            '--backbones', 'sparx-mamba-t', 'swin-t', '--num-images', '1',
            '--size', str(SIZE), '--stages', '3', '0', '--device', 'cpu',
            '--out', png, '--save-maps', npz]) == 0
    return stdout.getvalue(), dict(np.load(npz)), png


def test_cli_maps_are_nonnegative_and_centred(cli_run):
    _, maps, _ = cli_run
    assert sorted(maps) == ['sparx-mamba-t_stage0', 'sparx-mamba-t_stage3',
                            'swin-t_stage0', 'swin-t_stage3']
    for name in ('sparx-mamba-t', 'swin-t'):
        early, last = maps[f'{name}_stage0'], maps[f'{name}_stage3']
        for erf in (early, last):
            assert erf.shape == (SIZE, SIZE)
            assert erf.min() >= 0 and np.isfinite(erf).all()
        # Stage 0's centre cell (stride 4) covers pixels 48..51: the
        # strongest pixel is within two cells of it.
        peak = np.unravel_index(early.argmax(), early.shape)
        assert max(abs(p - 49.5) for p in peak) <= 8, (name, peak)
        # Deeper stages see further: more of the area for half the total.
        assert area_fractions(log_normalise(last))[0.5] > \
            area_fractions(log_normalise(early))[0.5]


def test_cli_prints_the_fractions_of_its_maps_and_draws(cli_run):
    stdout, maps, png = cli_run
    assert '1 image generated (no --images given)' in stdout
    for key, erf in maps.items():
        name, stage = key.rsplit('_stage', 1)
        fractions = area_fractions(log_normalise(erf))
        cells = ''.join(f'{100 * fractions[t]:.2f}%'.rjust(9)
                        for t in THRESHOLDS)
        # Names padded to the longest ('sparx-mamba-t') plus two.
        assert f'{name:<15}{stage:>6}{cells}  random init' in stdout
    from PIL import Image
    with Image.open(png) as image:
        # Two columns (backbones) by two rows (stages) of 3-inch panels,
        # plus an inch for the title and colour bar, at 100 dpi.
        assert image.format == 'PNG' and image.size == (700, 700)


def test_cli_unknown_backbone_lists_the_names(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _tool().main(['--backbones', 'sparx-mamba-tiny', '--num-images', '1',
                      '--size', '64'])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown backbone 'sparx-mamba-tiny'" in err
    for name in ('sparx-mamba-t', 'sparx-swin-t', 'spartan-xt', 'sparseswin',
                 'swin-t', 'convnext-t'):
        assert name in err


def test_checkpoints_load_through_the_loaders(tmp_path):
    from mmsparx.analysis.erf_backbones import build_erf_backbone
    from mmsparx.fileio import CheckpointError
    # mmsparx's loader: a bare SpaRTAN-XT file fills the backbone.
    torch.manual_seed(1)
    source = build_erf_backbone('spartan-xt', (3, )).module
    bare = str(tmp_path / 'spartan.pth')
    torch.save(source.state_dict(), bare)
    torch.manual_seed(2)
    loaded = build_erf_backbone('spartan-xt', (3, ), bare)
    assert loaded.init == 'checkpoint spartan.pth'
    filled = loaded.module.state_dict()
    for key, value in source.state_dict().items():
        torch.testing.assert_close(filled[key], value)
    # mmengine's loader, checked first: a classifier's Swin-T file (keys
    # under backbone.) fills stages 0 and 3 but for stage 0's output norm.
    torch.manual_seed(3)
    swin = build_erf_backbone('swin-t', (3, )).module
    classifier = str(tmp_path / 'swin_cls.pth')
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in
                               swin.state_dict().items()}}, classifier)
    both = build_erf_backbone('swin-t', (0, 3), classifier)
    assert both.init == ('checkpoint swin_cls.pth (2 tensors not in it, '
                         'at init)')
    filled = both.module.state_dict()
    for key, value in swin.state_dict().items():
        torch.testing.assert_close(filled[key], value)
    # A file of another backbone is refused before anything loads.
    with pytest.raises(CheckpointError, match='does not fit SwinTransformer'):
        build_erf_backbone('swin-t', (3, ), bare)
    with pytest.raises(ERFInputError, match='does not exist'):
        build_erf_backbone('spartan-xt', (3, ), str(tmp_path / 'no.pth'))
    with pytest.raises(ERFInputError, match='stages must be among'):
        build_erf_backbone('spartan-xt', (4, ))
