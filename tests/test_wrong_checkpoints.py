"""Wrong checkpoints are refused in one short paragraph that names what the
file holds and the setting that loads it (backbones and converter tools).
"""
import os.path as osp
import runpy
import subprocess
import sys
import traceback

import pytest
import torch
from conftest import ROOT, official_shapes, run_tool
from zero_init import zero_init

from mmsparx.converters.detect import detect_checkpoint
from mmsparx.fileio import CheckpointError
from mmsparx.converters.sparseswin import convert_sparseswin
from mmsparx.converters.spartan import convert_spartan, is_spartan_layout
from mmsparx.converters.sparx_mamba import (convert_sparx_mamba,
                                            is_official_layout)
from mmsparx.models.backbones import SpaRTAN, SparXMamba

PUBLISHED = {  # key file -> (family, variant)
    'sparx_mamba_t': ('SparX-Mamba', 'tiny'),
    'sparx_mamba_s': ('SparX-Mamba', 'small'),
    'sparx_mamba_b': ('SparX-Mamba', 'base'),
    'spartan_XT_tableI': ('SpaRTAN', 'xt'),
    'spartan_T_shipped': ('SpaRTAN', 't'),
    'sparseswin_public_T_100cls': ('SparseSwin', 'tiny'),
}
TOOLS = ('sparx_mamba', 'spartan', 'sparseswin')
# A file of another family for each tool, and the family the message names.
OTHER_FAMILY = {'sparx_mamba': ('spartan_XT_tableI', 'SpaRTAN-XT'),
                'spartan': ('sparx_mamba_t', 'SparX-Mamba-T'),
                'sparseswin': ('spartan_T_shipped', 'SpaRTAN-T')}


def authors_state(name: str) -> dict:
    """The authors' keys and shapes of ``name`` as broadcast views of one
    zero: right for every shape check, a few bytes each on disk (the
    largest file would otherwise take 190 MB)."""
    return {key: torch.zeros(1).expand(shape) if shape else torch.zeros(())
            for key, shape in official_shapes(name).items()}


def authors_file(tmp_path, name: str) -> str:
    """``name``'s authors' state dict saved as they save it."""
    path = tmp_path / f'{name}.pth'
    state = authors_state(name)
    torch.save({'model': state} if name.startswith('spartan') else state,
               path)
    return str(path)


def load_error(backbone, checkpoint: str) -> str:
    """The message ``backbone`` refuses ``checkpoint`` with."""
    backbone.init_cfg = dict(type='Pretrained', checkpoint=checkpoint)
    with pytest.raises(CheckpointError) as err:
        backbone.init_weights()
    return str(err.value)


# -- the detector -------------------------------------------------------------
@pytest.mark.parametrize('name', sorted(PUBLISHED))
def test_every_published_file_is_named(name):
    state = authors_state(name)
    family, variant = PUBLISHED[name]
    for layout in (state, {'backbone.' + k: v for k, v in state.items()},
                   {'module.' + k: v for k, v in state.items()}):
        info = detect_checkpoint(layout)
        assert (info.family, info.layout, info.variant) == (
            family, 'authors', variant)


def test_mmsparx_files_are_named_too():
    converted = convert_spartan(authors_state('spartan_XT_tableI'))
    info = detect_checkpoint(converted)
    assert (info.family, info.layout, info.label) == (
        'SpaRTAN', 'mmsparx', 'SpaRTAN-XT')
    custom = dict(channels=(8, 16, 24, 32), depths=(1, 1, 2, 1),
                  expand_ratios=(2, 2, 2, 2))
    info = detect_checkpoint(SpaRTAN(custom).state_dict())
    assert info.label.startswith('custom SpaRTAN (channels (8, 16, 24, 32)')
    assert 'expand_ratios=(2, 2, 2, 2)' in info.config()
    from mmsparx.models.backbones.sparx_swin import SparXSwin
    with zero_init():  # the keys and shapes are what is read
        state = SparXSwin('t').state_dict()
    info = detect_checkpoint(state)
    assert (info.family, info.label) == ('SparX-Swin', 'SparX-Swin-T')
    assert detect_checkpoint({'conv1.weight': torch.zeros(1)}).family is None


def test_layout_checks_tell_sparx_and_spartan_apart():
    sparx = authors_state('sparx_mamba_t')
    spartan = authors_state('spartan_T_shipped')
    assert is_official_layout(sparx) and not is_official_layout(spartan)
    assert is_spartan_layout(spartan) and not is_spartan_layout(sparx)


def test_converters_name_the_family_they_were_given():
    with pytest.raises(CheckpointError, match="SpaRTAN-T model .*"
                       "type='SpaRTAN', arch='t'"):
        convert_sparx_mamba(authors_state('spartan_T_shipped'))
    with pytest.raises(CheckpointError, match='SparX-Mamba-S model'):
        convert_spartan(authors_state('sparx_mamba_s'))
    with pytest.raises(CheckpointError, match='SpaRTAN-XT model'):
        convert_sparseswin(authors_state('spartan_XT_tableI'))


# -- backbones ----------------------------------------------------------------
def test_spartan_t_given_an_xt_file_says_xt(tmp_path):
    backbone = SpaRTAN('t')
    before = backbone.stem[0].conv.weight.clone()
    message = load_error(backbone, authors_file(tmp_path,
                                                'spartan_XT_tableI'))
    assert 'SpaRTAN-XT' in message and "arch='xt'" in message
    assert 'SpaRTAN-T' in message
    assert len(message) < 600, message
    assert torch.equal(backbone.stem[0].conv.weight, before)  # not touched


def test_sparx_mamba_given_a_spartan_file_names_spartan(tmp_path):
    message = load_error(SparXMamba('t'),
                         authors_file(tmp_path, 'spartan_T_shipped'))
    assert 'SpaRTAN' in message and "type='SpaRTAN'" in message
    assert 'no rule' not in message and len(message) < 600, message


def test_sparx_mamba_t_given_an_s_file_says_small(tmp_path):
    message = load_error(SparXMamba('t'),
                         authors_file(tmp_path, 'sparx_mamba_s'))
    assert 'SparX-Mamba-S' in message and "arch='small'" in message
    assert len(message) < 600, message


def test_spartan_given_a_sparx_file_names_sparx_mamba(tmp_path):
    message = load_error(SpaRTAN('t'), authors_file(tmp_path,
                                                    'sparx_mamba_t'))
    assert 'SparX-Mamba' in message and "type='SparXMamba'" in message


def test_sparseswin_given_a_spartan_file_names_spartan(tmp_path):
    from mmsparx.models.backbones import SparseSwin
    message = load_error(SparseSwin('t'),
                         authors_file(tmp_path, 'spartan_T_shipped'))
    assert "type='SpaRTAN', arch='t'" in message


def test_unreadable_and_foreign_files_are_refused_briefly(tmp_path):
    truncated = tmp_path / 'truncated.pth'
    torch.save({'model': authors_state('spartan_T_shipped')}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    message = load_error(SpaRTAN('t'), str(truncated))
    assert 'truncated' in message and len(message) < 400, message
    foreign = tmp_path / 'resnet.pth'
    torch.save({'conv1.weight': torch.zeros(1)}, foreign)
    message = load_error(SpaRTAN('t'), str(foreign))
    assert 'none of SparX-Mamba' in message and len(message) < 600, message


# -- the converter tools ------------------------------------------------------
def run_convert(tool: str, src: str, dst: str):
    """The tool as a user runs it (a new Python process)."""
    return run_tool([sys.executable, f'tools/model_converters/{tool}.py',
                     src, dst], timeout=300)


@pytest.fixture
def convert_here(capsys, monkeypatch):
    """``run_convert``'s result, the tool's script run in this process as
    ``python TOOL SRC DST`` runs it (``runpy``, ``__name__ == '__main__'``):
    the same code, arguments, exit status and stderr without a new
    interpreter's imports. An exception that escapes is printed as Python
    prints it, with exit status 1."""
    def run(tool: str, src: str, dst: str) -> subprocess.CompletedProcess:
        script = osp.join(ROOT, 'tools', 'model_converters', f'{tool}.py')
        monkeypatch.chdir(ROOT)
        monkeypatch.setattr(sys, 'argv', [script, src, dst])
        monkeypatch.setattr(sys, 'path', list(sys.path))
        capsys.readouterr()
        code = 0
        try:
            runpy.run_path(script, run_name='__main__')
        except SystemExit as exit:  # as the interpreter maps it
            code = exit.code
            if code is None:
                code = 0
            elif not isinstance(code, int):
                print(code, file=sys.stderr)
                code = 1
        except Exception:
            traceback.print_exc()
            code = 1
        out = capsys.readouterr()
        return subprocess.CompletedProcess(sys.argv, code, out.out, out.err)
    return run


def assert_refused(result, *words: str) -> None:
    """Exit status 1, one paragraph naming the problem, no traceback."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'Traceback' not in result.stderr, result.stderr
    assert 'error:' in result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


@pytest.mark.parametrize('tool', TOOLS)
def test_convert_tool_refuses_bad_files_in_one_paragraph(tmp_path, tool,
                                                         convert_here):
    name, label = OTHER_FAMILY[tool]
    dst = str(tmp_path / 'out.pth')
    assert_refused(convert_here(tool, authors_file(tmp_path, name), dst),
                   label, 'not in the authors\'')
    assert_refused(convert_here(tool, str(tmp_path / 'nope.pth'), dst),
                   'nope.pth', 'does not exist')
    truncated = tmp_path / 'truncated.pth'
    torch.save({'a': torch.zeros(1000)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:1500])
    assert_refused(convert_here(tool, str(truncated), dst), 'truncated')
    assert_refused(convert_here(tool, str(truncated), str(truncated)),
                   'refusing to overwrite')
    assert not (tmp_path / 'out.pth').exists()


def test_convert_tool_process_refuses_in_one_paragraph(tmp_path):
    """The refusals above as a user's process ends: exit status 1 and one
    paragraph on stderr, nothing written (one tool; each tool's script
    runs as ``__main__`` above)."""
    name, label = OTHER_FAMILY['sparx_mamba']
    dst = tmp_path / 'out.pth'
    assert_refused(run_convert('sparx_mamba', authors_file(tmp_path, name),
                               str(dst)), label, 'not in the authors\'')
    assert not dst.exists()
