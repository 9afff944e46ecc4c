"""mmsparx installed (not editable, from a copy of the checkout that is
then deleted) into a fresh virtual environment that sees this one's
packages, with nothing downloaded, trains a demo config from a folder
outside the checkout: the installed package alone carries the code, the
configs and the tools (``mmsparx/.mim``, as mim finds them), and the
version ranges of mmsparx/utils/versions.py are its requirements."""
import os
import os.path as osp
import shutil
import site
import subprocess
import sys

from packaging.requirements import Requirement

from conftest import ROOT, as_cli, coco_options
from mmsparx.utils.versions import MINIMUMS, specifier
from test_toolbox_train import source_copy

CONFIG = osp.join('configs', 'demo', 'maskrcnn_sparx_small_fpn_shapes.py')
# Run in the new environment: where mmsparx comes from, then its installed
# tools/train.py as `python TOOL ARGS` runs it, in the same process. As in
# the suite's own runs (tests/conftest.py, unformatted_config_text), yapf
# does not re-indent the config text the runner prints and dumps.
TRAIN = '''
import runpy, sys
from importlib import metadata
from mmengine.config import config
config.FormatCode = lambda text, **kwargs: (text, False)
import mmsparx
print('mmsparx from', mmsparx.__file__)
print('requires', '|'.join(metadata.requires('mmsparx')))
tool = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(tool, run_name='__main__')
print('mmsparx still from', sys.modules['mmsparx'].__file__)
'''


def run(args, cwd, env) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def fresh_venv(path: str, env: dict) -> tuple:
    """A venv of this interpreter's base Python whose site-packages also
    holds this environment's (a .pth of plain paths: their own .pth files,
    the checkout's editable mmsparx among them, are not run); returns its
    python and site-packages."""
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', path],
                   check=True, timeout=120)
    python = osp.join(path, 'bin', 'python')
    purelib = run([python, '-c', 'import sysconfig; '
                   'print(sysconfig.get_paths()["purelib"])'], path,
                  env).strip()
    with open(osp.join(purelib, 'outer_env.pth'), 'w') as f:
        f.write('\n'.join(site.getsitepackages()) + '\n')
    return python, purelib


def test_installed_copy_trains_outside_the_checkout(tmp_path, coco_root):
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    env.update(OMP_NUM_THREADS='1', MMSPARX_NO_EXT='1',
               PIP_DISABLE_PIP_VERSION_CHECK='1')
    python, purelib = fresh_venv(str(tmp_path / 'venv'), env)
    src = source_copy(tmp_path / 'src')
    # --ignore-installed: pip leaves the outer environment's mmsparx alone.
    run([python, '-m', 'pip', 'install', '-q', '--no-deps', '--no-index',
         '--no-build-isolation', '--no-cache-dir', '--ignore-installed',
         src], str(tmp_path), env)
    shutil.rmtree(src)  # the installed files must be enough
    package = osp.join(purelib, 'mmsparx')
    mim = osp.join(package, '.mim')
    assert osp.isfile(osp.join(mim, CONFIG))
    assert osp.isfile(osp.join(mim, 'model-index.yml'))

    work = tmp_path / 'outside'  # neither the checkout nor a parent of it
    work.mkdir()
    options = coco_options(coco_root)
    options.update({'train_dataloader.dataset.indices': 1,  # 1 iteration
                    'train_dataloader.dataset.pipeline.2.scale': (80, 64),
                    'train_cfg.val_begin': 2})  # no validation
    output = run([python, '-c', TRAIN, osp.join(mim, 'tools', 'train.py'),
                  osp.join(mim, CONFIG), '--work-dir', 'work',
                  *as_cli(options)], str(work), env)
    assert f'mmsparx from {package}/__init__.py' in output
    assert f'mmsparx still from {package}/__init__.py' in output
    assert ROOT + '/mmsparx' not in output.replace(package, '')
    assert 'Epoch(train) [1][1/1]' in output
    assert osp.isfile(work / 'work' / 'epoch_1.pth')
    # Installed without the C++ kernels (MMSPARX_NO_EXT): the scan says
    # which PyTorch backend it fell back to.
    assert 'mmsparx selective scan on cpu: chunked backend' in output

    # The requirements the package declares: the table's ranges.
    requires = {Requirement(line).name: Requirement(line) for line in
                output.split('requires ', 1)[1].splitlines()[0].split('|')}
    for entry in MINIMUMS:
        declared = requires[entry['package']]
        assert str(declared.specifier) == str(
            Requirement(entry['package'] + specifier(entry)).specifier)
        core = entry['used_by'] is None
        assert (declared.marker is None) == core, entry['package']
