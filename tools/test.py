"""Test a checkpoint with any mmdet / mmseg / mmpretrain config."""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmsparx.apis import (build_runner, prepare_device,  # noqa: E402
                          refusals_exit)
from mmsparx.utils.cli import add_common_args, load_config  # noqa: E402
from mmsparx.utils.launch_guard import guard_launch  # noqa: E402
from mmsparx.utils.runtime import finish_distributed  # noqa: E402


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
        hook.update(enable=True)
        images_into(cfg, show_dir)
    elif cfg.default_scope == 'mmseg':
        hook.update(draw=True, interval=1)
        images_into(cfg, show_dir)
    else:  # mmdet's hook joins work_dir/timestamp itself
        hook.update(draw=True, test_out_dir=show_dir)


def images_into(cfg, show_dir: str) -> None:
    """mmseg's and mmpretrain's hooks draw through the visualizer's
    backends: point its LocalVisBackend's images at the work dir's
    timestamp folder + ``show_dir``. The runner gives the visualizer that
    folder as save_dir and each backend writes under its ``vis_data``
    subfolder, hence the '..' (an absolute ``show_dir`` stays as is)."""
    if 'visualizer' not in cfg:
        raise ValueError('--show-dir needs a visualizer in the config (the '
                         'toolbox default_runtime has it).')
    cfg.visualizer.pop('save_dir', None)  # the runner's default, as above
    backends = list(cfg.visualizer.get('vis_backends') or [])
    local = [b for b in backends
             if str(b.get('type', '')).endswith('LocalVisBackend')]
    if not local:
        local = [dict(type='LocalVisBackend')]
        backends += local
    for backend in local:
        backend['img_save_dir'] = osp.join('..', show_dir)
    cfg.visualizer.vis_backends = backends


def main(argv=None) -> None:
    guard_launch()  # a torchrun worker dies with torchrun
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options, args.launcher,
                      args.work_dir)
    from mmsparx.datasets.preflight import ensure_ready
    ensure_ready(cfg, args.config, ('test', ), weights=False)  # the data
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
    runner = build_runner(cfg, args.config, changes, args.partial_load)
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
    with refusals_exit():
        main()
