"""Train any mmdet / mmseg / mmpretrain config (flags as mmdet's train.py).

The toolbox comes from the config's ``default_scope``; without CUDA the
same config runs with gloo and plain BN (see ``mmsparx.utils.runtime``).
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmsparx.apis import (build_runner, prepare_device,  # noqa: E402
                          refusals_exit)
from mmsparx.utils.cli import add_common_args, load_config  # noqa: E402
from mmsparx.engine.optimizers.cpu_amp import enable_amp  # noqa: E402
from mmsparx.utils.launch_guard import guard_launch  # noqa: E402
from mmsparx.utils.runtime import finish_distributed  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision training')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by the real total batch size')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from CKPT, or from the latest checkpoint in the '
        'work dir when no path is given')
    parser.add_argument(
        '--optim-from-config', action='store_true',
        help='with --resume: keep the weights, epoch/iteration counters, '
        'random states and optimizer moments of the checkpoint, but take '
        'the optimizer settings (lr, weight decay, ...) and the lr schedule '
        'from the config, e.g. a lower optim_wrapper.optimizer.lr after a '
        'NaN stop (a plain --resume restores the old ones)')
    add_common_args(parser)
    return parser.parse_args(argv)


def resume_point(work_dir: str) -> str:
    """The checkpoint ``--resume`` continues from; an error that says why
    when there is none (mmengine would silently start from scratch)."""
    from mmengine.runner import find_latest_checkpoint
    path = find_latest_checkpoint(work_dir)  # what mmengine would resume
    if path is None:
        raise FileNotFoundError(
            f'--resume: nothing to resume in {work_dir} (no '
            'last_checkpoint: no checkpoint was completed there). Run '
            'without --resume to start training, or give the checkpoint: '
            '--resume PATH.')
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'--resume: {osp.join(work_dir, "last_checkpoint")} names {path}, '
            'which does not exist (moved or deleted?). Give the checkpoint '
            'to resume: --resume PATH.')
    return path


def use_config_optimizer(cfg, resume) -> None:
    """``--optim-from-config``: the resume keeps the config's optimizer
    settings and schedule (mmsparx.engine.hooks.OptimFromConfigHook)."""
    if resume is None:
        raise ValueError(
            '--optim-from-config changes what --resume restores, and no '
            '--resume was given. Add it: tools/train.py CONFIG --resume '
            '[CKPT] --optim-from-config --cfg-options '
            'optim_wrapper.optimizer.lr=NEW_LR')
    cfg.custom_hooks = list(cfg.get('custom_hooks') or []) + [
        dict(type='OptimFromConfigHook')]


def stop_cleanly_on_preemption(cfg) -> None:
    """SIGTERM / SIGUSR1 (Slurm's preemption and time limit): finish the
    iteration, save a resumable checkpoint, exit 75
    (mmsparx.engine.hooks.PreemptionHook)."""
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(h.get('type') == 'PreemptionHook' for h in hooks):
        cfg.custom_hooks = hooks + [dict(type='PreemptionHook')]


def main(argv=None) -> None:
    guard_launch()  # a torchrun worker dies with torchrun
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options, args.launcher,
                      args.work_dir)
    amp_changes = enable_amp(cfg) if args.amp else []  # bf16 on CPU
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in (
                cfg.auto_scale_lr or {}):
            raise ValueError('--auto-scale-lr needs `auto_scale_lr = dict('
                             'enable=False, base_batch_size=16)` in the '
                             'config.')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, resume_point(cfg.work_dir)
    elif args.resume is not None:
        if not osp.isfile(args.resume):
            raise FileNotFoundError(f'--resume {args.resume}: no such '
                                    'checkpoint file.')
        cfg.resume, cfg.load_from = True, args.resume
    if args.optim_from_config:
        use_config_optimizer(cfg, args.resume)
    stop_cleanly_on_preemption(cfg)
    # Data and weights, once the arguments are known to be right.
    from mmsparx.datasets.preflight import ensure_ready
    ensure_ready(cfg, args.config)
    changes = prepare_device(cfg) + amp_changes
    runner = build_runner(cfg, args.config, changes, args.partial_load)
    runner.train()
    finish_distributed()


if __name__ == '__main__':
    with refusals_exit():
        main()
