"""The runner the tools train and test with: the config adapted to the
machine, the registry error turned into its fix, the whole-model loading
rules installed, and a refusal printed as one paragraph."""
from __future__ import annotations

import contextlib
import sys
from typing import Iterator, List, Sequence

from mmengine.config import Config

from mmsparx.engine.hooks.checkpoint_loading import guard_runner_loading
from mmsparx.fileio import CheckpointError
from mmsparx.registry import UnknownArgumentError
from mmsparx.utils.cli import MissingImportError, explain_build_error
from mmsparx.utils.runtime import adapt_cfg_to_device, init_cpu_dist


@contextlib.contextmanager
def refusals_exit() -> Iterator[None]:
    """A tool's refusal of its input (a checkpoint that does not fit the
    model, a model argument that does not exist) as its one paragraph on
    stderr and exit status 2, instead of a traceback that buries it."""
    try:
        yield
    except (CheckpointError, UnknownArgumentError) as err:
        print(f'error: {err}', file=sys.stderr)
        raise SystemExit(2) from None


def prepare_device(cfg: Config) -> List[str]:
    """Adapt ``cfg`` to a CPU-only machine and start gloo if launched;
    return the changes, for :func:`build_runner` to log."""
    distributed = cfg.launcher != 'none'
    changes = adapt_cfg_to_device(cfg, distributed)
    if distributed:
        init_cpu_dist(cfg.launcher, cfg.env_cfg.dist_cfg.get('backend',
                                                             'gloo'))
    return changes


def build_runner(cfg: Config, config_path: str,
                 device_changes: Sequence[str] = (),
                 partial_load: bool = False):
    """``Runner.from_cfg`` (or the config's ``runner_type``) with the
    registry error rewritten into the fix; logs ``device_changes``. The
    runner refuses a checkpoint that does not fill its model unless
    ``partial_load`` (see
    :func:`mmsparx.engine.hooks.checkpoint_loading.require_whole_model`).
    """
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
    guard_runner_loading(runner, partial_load)
    return runner
