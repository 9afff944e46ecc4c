"""What ``tools/train.py`` and ``tools/test.py`` share: config loading for
any of the three toolboxes, device adaptation, and clear build errors."""
from __future__ import annotations

import argparse
import os
import os.path as osp
import re
import uuid
from typing import List, Optional, Sequence

from mmengine.config import Config, DictAction

SCOPES = ('mmdet', 'mmseg', 'mmpretrain')
_MISSING = re.compile(r"([\w.]+) is not in the (\w+)::(\w+) registry")


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


def prepare_device(cfg: Config) -> List[str]:
    """Adapt ``cfg`` to a CPU-only machine and start gloo if launched;
    return the changes, for :func:`build_runner` to log."""
    from mmsparx.runtime import adapt_cfg_to_device, init_cpu_dist
    distributed = cfg.launcher != 'none'
    changes = adapt_cfg_to_device(cfg, distributed)
    if distributed:
        init_cpu_dist(cfg.launcher, cfg.env_cfg.dist_cfg.get('backend',
                                                             'gloo'))
    return changes


def explain_build_error(err: KeyError, config: str) -> Optional[str]:
    """A fix for "X is not in the mmdet::model registry", or None."""
    match = _MISSING.search(str(err))
    if not match:
        return None
    name, scope, _ = match.groups()
    import mmsparx  # noqa: F401  registers mmsparx's names to compare
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


def build_runner(cfg: Config, config_path: str,
                 device_changes: Sequence[str] = ()):
    """``Runner.from_cfg`` (or the config's ``runner_type``) with the
    registry error rewritten into the fix; logs ``device_changes``."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    try:
        if 'runner_type' in cfg:
            runner = RUNNERS.build(cfg)
        else:
            runner = Runner.from_cfg(cfg)
    except KeyError as err:
        hint = explain_build_error(err, config_path)
        if hint is None:
            raise
        raise MissingImportError(hint) from err
    for change in device_changes:
        runner.logger.info(f'no CUDA: {change}')
    return runner
