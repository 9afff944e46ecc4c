"""Test a checkpoint with any mmdet / mmseg / mmpretrain config."""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmsparx.cli import (add_common_args, build_runner, load_config,  # noqa
                         prepare_device)
from mmsparx.runtime import finish_distributed  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', help='dump predictions to this pickle file')
    parser.add_argument('--show-dir', help='save drawn predictions here '
                        '(relative to the work dir\'s timestamp folder)')
    parser.add_argument('--tta', action='store_true',
                        help='test-time augmentation from the config')
    add_common_args(parser)
    return parser.parse_args(argv)


def enable_drawing(cfg, show_dir: str) -> None:
    """Switch on the toolbox's visualization hook to write images."""
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        raise ValueError('--show-dir needs default_hooks.visualization in '
                         'the config (the toolbox default_runtime has it).')
    if cfg.default_scope == 'mmpretrain':
        hook.update(enable=True, out_dir=show_dir)
    elif cfg.default_scope == 'mmseg':
        hook.update(draw=True, interval=1)
        cfg.visualizer.save_dir = show_dir
    else:
        hook.update(draw=True, test_out_dir=show_dir)


def main(argv=None) -> None:
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options, args.launcher,
                      args.work_dir)
    cfg.load_from = args.checkpoint
    if args.show_dir:
        enable_drawing(cfg, args.show_dir)
    if args.tta:
        if 'tta_model' not in cfg or 'tta_pipeline' not in cfg:
            raise ValueError('--tta needs tta_model and tta_pipeline in the '
                             'config.')
        cfg.model = dict(type=cfg.tta_model.type, module=cfg.model,
                         **{k: v for k, v in cfg.tta_model.items()
                            if k != 'type'})
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    changes = prepare_device(cfg)
    runner = build_runner(cfg, args.config, changes)
    if args.out:
        if not args.out.endswith(('.pkl', '.pickle')):
            raise ValueError(f'--out must end in .pkl, got {args.out!r}')
        if cfg.default_scope == 'mmdet':
            from mmdet.evaluation import DumpDetResults as Dump
        else:
            from mmengine.evaluator import DumpResults as Dump
        runner.test_evaluator.metrics.append(Dump(out_file_path=args.out))
    runner.test()
    finish_distributed()


if __name__ == '__main__':
    main()
