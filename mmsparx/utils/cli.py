"""What ``tools/train.py`` and ``tools/test.py`` share: config loading for
any of the three toolboxes, device adaptation, and clear build errors."""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import os.path as osp
import re
import sys
import uuid
from typing import Iterator, Optional, Set

from mmengine.config import Config, DictAction

SCOPES = ('mmdet', 'mmseg', 'mmpretrain')
_MISSING = re.compile(r"([\w.]+) is not in the (\w+)::(\w+) registry")
IMPORT_LINE = ("custom_imports = dict(imports=['mmsparx'], "
               "allow_failed_imports=False)")


class MissingImportError(KeyError):
    """A config names a type no imported package registered; the message
    says which import to add. (KeyError, as mmengine raises, for callers
    that catch that; printed as plain text, not as a quoted repr.)"""

    def __str__(self) -> str:
        return str(self.args[0])


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--work-dir', help='where logs and checkpoints go')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config entries, e.g. train_dataloader.batch_size=4')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none', help='job launcher')
    # torch.distributed.launch passes --local-rank; torchrun sets the env.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    parser.add_argument(
        '--partial-load', action='store_true',
        help='load a checkpoint (load_from, the test checkpoint, --resume) '
        'that leaves some of the model\'s keys unfilled or of another shape, '
        'e.g. fine-tuning with a new head; logs the loaded/missing/'
        'unexpected/mismatched counts. Without it such a file is refused '
        'before anything runs')


def load_config(path: str, cfg_options: Optional[dict], launcher: str,
                work_dir: Optional[str]) -> Config:
    """Read a config of any toolbox and fill what the Runner needs."""
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = '0'
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    scope = cfg.get('default_scope')
    if scope not in SCOPES:
        raise ValueError(
            f'{path}: default_scope is {scope!r}; it must name the toolbox '
            f'the config is for, one of {SCOPES} (inherit the toolbox\'s '
            f'default_runtime.py, or set default_scope yourself).')
    warn_missing_custom_imports(cfg, path)
    cfg.launcher = launcher
    if isinstance(cfg.get('visualizer'), dict):
        # mmengine keeps visualizers by name for the whole process: a second
        # runner (notebook, test suite) would get the first one's, possibly
        # another toolbox's class. A unique name keeps each runner's own.
        base = cfg.visualizer.get('name', 'visualizer')
        cfg.visualizer['name'] = f'{base}-{uuid.uuid4().hex[:8]}'
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(path))[0])
    return cfg


def _types_in(node) -> Iterator[str]:
    """Every string ``type`` in a (nested) config dict or list."""
    if isinstance(node, dict):
        if isinstance(node.get('type'), str):
            yield node['type']
        for value in node.values():
            yield from _types_in(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from _types_in(value)


def _imports_mmsparx(custom_imports) -> bool:
    """Whether a config's ``custom_imports`` imports mmsparx (or one of its
    modules, which imports the package first)."""
    if not isinstance(custom_imports, dict):
        return False
    imports = custom_imports.get('imports', [])
    if isinstance(imports, str):
        imports = [imports]
    return any(name == 'mmsparx' or name.startswith('mmsparx.')
               for name in imports)


def mmsparx_types(cfg: Config) -> Set[str]:
    """The mmsparx model types that ``cfg.model`` names (``mmdet.X`` is
    matched as ``X``)."""
    from mmsparx.registry import REGISTERED
    return {name for name in _types_in(cfg.get('model'))
            if name.rsplit('.', 1)[-1] in REGISTERED}


def warn_missing_custom_imports(cfg: Config, path: str) -> bool:
    """Warn when ``cfg`` uses mmsparx models without importing mmsparx.

    tools/train.py and test.py import mmsparx themselves, so such a config
    works here and only fails later in the toolbox's own tools, mim or
    deployment, far from the cause. Returns whether it warned.
    """
    names = mmsparx_types(cfg)
    custom_imports = cfg.get('custom_imports')
    if not names or _imports_mmsparx(custom_imports):
        return False
    from mmengine.logging import print_log
    line = IMPORT_LINE
    if isinstance(custom_imports, dict) and custom_imports.get('imports'):
        imports = custom_imports['imports']
        imports = [imports] if isinstance(imports, str) else list(imports)
        line = (f'custom_imports = dict(imports={imports + ["mmsparx"]!r}, '
                f'allow_failed_imports=False)')
    print_log(
        f'{path}: the model uses mmsparx type(s) {sorted(names)} but the '
        f"config's custom_imports does not import mmsparx. tools/train.py "
        f'and tools/test.py import it themselves, but mmdet/mmseg/'
        f"mmpretrain's own tools, mim and deployment will fail with "
        f'"... is not in the registry". Add this line to the config:\n'
        f'    {line}', logger='current', level=logging.WARNING)
    return True


@contextlib.contextmanager
def json_stdout(enabled: bool = True) -> Iterator[None]:
    """While active, everything written to stdout (Python prints, mmengine
    log lines, C-level output) goes to stderr, so that a ``--json`` tool's
    stdout holds only the JSON it prints after the block."""
    if not enabled:
        yield
        return
    real = sys.stdout
    real.flush()
    saved_fd = None
    try:
        fd = real.fileno()
        saved_fd = os.dup(fd)
        os.dup2(sys.stderr.fileno(), fd)
    except (AttributeError, OSError, ValueError):
        fd = None  # stdout is no file (captured by a test): Python only
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        real.flush()  # handlers that kept the real stdout object
        sys.stderr.flush()
        if saved_fd is not None:
            os.dup2(saved_fd, fd)
            os.close(saved_fd)


def explain_build_error(err: KeyError, config: str) -> Optional[str]:
    """A fix for "X is not in the mmdet::model registry", or None."""
    match = _MISSING.search(str(err))
    if not match:
        return None
    name, scope, _ = match.groups()
    from mmsparx.registry import REGISTERED
    if name in REGISTERED:
        return (f"{config}: '{name}' is an mmsparx model, but mmsparx was not "
                f'imported. Add this line to the config:\n'
                f"    custom_imports = dict(imports=['mmsparx'], "
                f'allow_failed_imports=False)')
    return (f"{config}: no imported package registers '{name}' in {scope}. "
            f'Check the spelling; if it comes from a plugin, import it with '
            f"custom_imports = dict(imports=['<plugin>'], "
            f'allow_failed_imports=False).')
