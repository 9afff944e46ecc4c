"""The RT-DETR converter on wrong files (another family, mmsparx's own, a
missing part or key) and on the command line (converts, checks, leaves the
input, refuses a misfit in one paragraph)."""
import hashlib
import os
import os.path as osp
import sys

import pytest
import torch
from conftest import ROOT, official_shapes, run_tool

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

from mmsparx.fileio import CheckpointError  # noqa: E402
from mmsparx.converters.rtdetr import convert_rtdetr  # noqa: E402

from test_rtdetr_converter import (R18_BASE, TOOL, build,  # noqa: E402
                                   detector_cfg, official)


# -- wrong files --------------------------------------------------------------
def _authors(name: str) -> dict:
    return {k: torch.zeros(1).expand(s) if s else torch.zeros(())
            for k, s in official_shapes(name).items()}


@pytest.mark.parametrize('name,label,tool', [
    ('spartan_T_shipped', 'SpaRTAN-T', 'tools/model_converters/spartan.py'),
    ('sparx_mamba_t', 'SparX-Mamba-T',
     'tools/model_converters/sparx_mamba.py')])
def test_other_family_is_named(name, label, tool):
    with pytest.raises(CheckpointError) as err:
        convert_rtdetr({'model': _authors(name)})
    assert label in str(err.value) and tool in str(err.value)


def test_mmsparx_and_unknown_files_are_refused():
    model = build(detector_cfg())
    with pytest.raises(CheckpointError, match='already an mmsparx RT-DETR'):
        convert_rtdetr({'state_dict': model.state_dict()})
    with pytest.raises(CheckpointError, match='not an official RT-DETR'):
        convert_rtdetr({'layer.weight': torch.zeros(2)})


def test_missing_part_and_missing_key():
    state = official(18, 3).state_dict()
    no_decoder = {k: v for k, v in state.items()
                  if not k.startswith('decoder.')}
    with pytest.raises(CheckpointError, match=r'decoder \(RTDETRTransformer'):
        convert_rtdetr(no_decoder)
    with pytest.raises(CheckpointError, match='outside backbone'):
        convert_rtdetr(dict(state, **{'criterion.empty_weight':
                                      torch.ones(81)}))
    del state['decoder.dec_score_head.0.weight']
    with pytest.raises(CheckpointError, match='dec_score_head.0.weight'):
        convert_rtdetr(state)


# -- the command line ---------------------------------------------------------
def _digest(path) -> str:
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """Official R18 and R34 training files and an R18 config."""
    root = tmp_path_factory.mktemp('rtdetr')
    paths = {}
    for depth, layers in ((18, 3), (34, 4)):
        state = official(depth, layers).state_dict()
        paths[depth] = str(root / f'rtdetr_r{depth}vd.pth')
        torch.save({'model': state, 'ema': {'module': state, 'updates': 1},
                    'last_epoch': 71}, paths[depth])
    paths['config'] = str(root / 'r18.py')
    with open(paths['config'], 'w') as f:
        f.write(f'_base_ = [{R18_BASE!r}]\ndefault_scope = "mmdet"\n'
                'model = dict(backbone=dict(init_cfg=None))\n')
    paths['root'] = root
    return paths


def load_tool():
    """tools/model_converters/rtdetr.py as a module, to call its main()
    in this process."""
    sys.path.insert(0, osp.join(ROOT, 'tools', 'model_converters'))
    try:
        import rtdetr as tool
    finally:
        sys.path.pop(0)
    return tool


def test_cli_converts_checks_and_leaves_the_input(files, capsys):
    # The tool's main in this process; the command line's own exit status
    # and stderr are test_cli_refuses_r34_into_r18_config's.
    src, dst = files[18], str(files['root'] / 'out.pth')
    before, mtime = _digest(src), os.stat(src).st_mtime_ns
    load_tool().main([src, dst, '--config', files['config']])
    stdout = capsys.readouterr().out
    assert 'RT-DETR-R18vd (3 decoder layers, 80 classes)' in stdout
    assert 'ema.module' in stdout
    assert _digest(src) == before and os.stat(src).st_mtime_ns == mtime
    assert not osp.exists(dst + '.part')
    out = torch.load(dst, weights_only=True)
    assert out['meta']['weights'] == 'ema.module'
    model = build(detector_cfg())
    model.load_state_dict(out['state_dict'], strict=True)


def test_cli_refuses_r34_into_r18_config(files):
    dst = files['root'] / 'r34_as_r18.pth'
    dst.write_bytes(b'keep me')  # an earlier output stays as it was
    src = files[34]
    before = _digest(src)
    result = run_tool([sys.executable, TOOL, src, str(dst), '--config',
                       files['config']], timeout=300,
                      env={'OMP_NUM_THREADS': '1'})
    assert result.returncode == 1
    err = result.stderr.strip().splitlines()[-1]
    assert 'Traceback' not in result.stderr
    assert 'RT-DETR-R34vd (4 decoder layers' in err
    assert 'model.backbone.depth=34' in err
    assert 'model.bbox_head.transformer.num_layers=4' in err
    assert 'rtdetr_r34vd_72e_coco.py' in err
    assert dst.read_bytes() == b'keep me' and _digest(src) == before


def test_cli_errors_in_one_paragraph(files, tmp_path, capsys):
    tool = load_tool()

    def error(*argv) -> str:
        with pytest.raises(SystemExit) as stop:
            tool.main([str(a) for a in argv])
        assert stop.value.code == 1
        return capsys.readouterr().err

    assert 'refusing to overwrite' in error(files[18], files[18])
    link = tmp_path / 'link.pth'
    link.symlink_to(files[18])
    assert 'same file' in error(files[18], link)
    link.unlink()
    # a config with another backbone: named, and the PResNet setting given
    spartan_cfg = tmp_path / 'spartan_rtdetr.py'
    spartan_cfg.write_text(
        f'_base_ = [{R18_BASE!r}]\n'
        "model = dict(backbone=dict(_delete_=True, type='SpaRTAN', "
        "arch='t', out_indices=(1, 2, 3), out_norm=None), "
        'neck=dict(in_channels=[64, 128, 256]))\n')
    message = error(files[18], tmp_path / 'o.pth', '--config', spartan_cfg)
    assert 'RT-DETR with SpaRTAN' in message
    assert "model.backbone=dict(type='PResNet', depth=18)" in message
    assert 'does not exist' in error(tmp_path / 'nope.pth', tmp_path / 'o')
    spartan = tmp_path / 'spartan.pth'
    torch.save({'model': _authors('spartan_T_shipped')}, spartan)
    assert 'tools/model_converters/spartan.py' in error(spartan,
                                                        tmp_path / 'o.pth')
    # a key removed: the strict load from the file's own shapes says which
    state = official(18, 3).state_dict()
    del state['decoder.decoder.layers.1.norm2.bias']
    cut = tmp_path / 'cut.pth'
    torch.save({'model': state}, cut)
    message = error(cut, tmp_path / 'o.pth')
    assert '1 keys missing' in message and 'layers.1.norm2.bias' in message
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes(open(files[18], 'rb').read()[:4096])
    assert 'truncated' in error(truncated, tmp_path / 'o.pth')
    assert not any(p.name.startswith('o') for p in tmp_path.iterdir())
