"""`make demo`: generate a COCO-format set, train a detector (RT-DETR with a
small SparX-Mamba by default, Mask R-CNN with it under `--preset maskrcnn`
(`make demo DEMO=maskrcnn`); any mmdet config with --config) with 2
processes (tools/dist_train.sh), evaluate with pycocotools, draw the
predictions and every loss term / the mAP per validation, and write
demo_summary.json (metrics, wall time) into the work dir.
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

# `make demo DEMO=NAME`: the config each preset trains.
PRESETS = {'rtdetr': 'configs/demo/rtdetr_sparx_shapes.py',
           'maskrcnn': 'configs/demo/maskrcnn_sparx_small_fpn_shapes.py'}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--preset', choices=list(PRESETS), default='rtdetr',
                        help='the config to train when --config is not '
                        'given: ' + ', '.join(f'{k}: {v}'
                                              for k, v in PRESETS.items()))
    parser.add_argument('--config', default=None,
                        help='any mmdet config (overrides --preset)')
    parser.add_argument('--data-root', default='data/demo_coco')
    parser.add_argument('--work-dir', default=None,
                        help='default: work_dirs/demo (rtdetr), '
                        'work_dirs/demo_maskrcnn (maskrcnn)')
    parser.add_argument('--num-train', type=int, default=48)
    parser.add_argument('--num-val', type=int, default=16)
    parser.add_argument('--size', type=int, default=256)
    parser.add_argument('--procs', type=int, default=2,
                        help='training processes (GPUs, or CPU ranks)')
    parser.add_argument('--epochs', type=int, default=None,
                        help='override the config\'s max_epochs')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    args.config = args.config or PRESETS[args.preset]
    if args.work_dir is None:
        args.work_dir = 'work_dirs/demo' + (
            '' if args.preset == 'rtdetr' else f'_{args.preset}')
    os.chdir(ROOT)
    start = time.time()
    from mmsparx.datasets import generate_coco
    generate_coco(args.data_root, args.num_train, args.num_val,
                  (args.size, args.size), seed=0)
    print(f'[demo] generated {args.num_train}+{args.num_val} images in '
          f'{args.data_root}')

    options = [f'train_dataloader.dataset.data_root={args.data_root}/',
               f'val_dataloader.dataset.data_root={args.data_root}/',
               f'test_dataloader.dataset.data_root={args.data_root}/',
               f'val_evaluator.ann_file={args.data_root}/annotations/'
               'instances_val.json',
               f'test_evaluator.ann_file={args.data_root}/annotations/'
               'instances_val.json']
    if args.epochs:
        options += [f'train_cfg.max_epochs={args.epochs}',
                    f'default_hooks.checkpoint.interval={args.epochs}']
    env = dict(os.environ, PYTHON=sys.executable)
    train = [osp.join('tools', 'dist_train.sh'), args.config,
             str(args.procs), '--work-dir', args.work_dir,
             '--cfg-options', *options]
    print('[demo] ' + ' '.join(train))
    subprocess.run(train, check=True, env=env)
    trained = time.time()

    with open(osp.join(args.work_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    metrics = evaluate(args.config, checkpoint, args.work_dir, options)
    picture = osp.join(args.work_dir, 'predictions.png')
    draw_predictions(args.config, checkpoint, options,
                     osp.join(args.data_root, 'val', '000000.jpg'), picture)
    curves = osp.join(args.work_dir, 'curves.png')
    draw_training_curves(args.work_dir, curves, args.config)
    found = ', '.join(f'{kind} mAP {metrics[f"coco/{kind}_mAP"]:.3f}'
                      for kind in ('bbox', 'segm')
                      if f'coco/{kind}_mAP' in metrics)
    print(f'[demo] {found} (COCO metric, pycocotools, {args.num_val} val '
          'images)')
    print(f'[demo] predictions drawn in {picture}, loss and mAP per epoch '
          f'in {curves}')
    wall = time.time() - start
    print(f'[demo] wall time {wall:.0f} s (training {trained - start:.0f} s)')
    summary = dict(config=args.config, wall_s=round(wall),
                   train_s=round(trained - start),
                   metrics={k: v for k, v in metrics.items()
                            if isinstance(v, (int, float))})
    with open(osp.join(args.work_dir, 'demo_summary.json'), 'w') as f:
        json.dump(summary, f, indent=1)


def _config(config: str, options: list, work_dir: str):
    from mmengine.config import Config, DictAction

    from mmsparx.utils.runtime import adapt_cfg_to_device
    cfg = Config.fromfile(config)
    parsed = {}
    for option in options:
        key, value = option.split('=', 1)
        parsed[key] = DictAction._parse_iterable(value)
    cfg.merge_from_dict(parsed)
    cfg.work_dir = work_dir
    adapt_cfg_to_device(cfg, distributed=False)
    return cfg


def evaluate(config: str, checkpoint: str, work_dir: str,
             options: list) -> dict:
    """Run the COCO metric on the val split in this process."""
    from mmsparx.apis import build_runner, prepare_device
    cfg = _config(config, options, work_dir)
    cfg.load_from = checkpoint
    cfg.launcher = 'none'
    return build_runner(cfg, config, prepare_device(cfg)).test()


def draw_training_curves(work_dir: str, out_file: str, config: str) -> None:
    """The loss per logged iteration and bbox mAP per validation."""
    from mmsparx.visualization.curves import (draw_curves, read_curves,
                                              scalars_file)
    curves = read_curves(scalars_file(work_dir))
    draw_curves(curves, out_file, title=osp.basename(config))


def draw_predictions(config: str, checkpoint: str, options: list,
                     image_path: str, out_file: str) -> None:
    """Boxes and masks above 0.3 drawn by mmdet's visualizer."""
    import mmcv
    from mmdet.apis import inference_detector, init_detector
    from mmdet.registry import VISUALIZERS
    cfg = _config(config, options, 'work_dirs/demo')
    model = init_detector(cfg, checkpoint, device='cpu')
    result = inference_detector(model, image_path)
    visualizer = VISUALIZERS.build(model.cfg.visualizer)
    visualizer.dataset_meta = model.dataset_meta
    visualizer.add_datasample(
        'predictions', mmcv.imconvert(mmcv.imread(image_path), 'bgr', 'rgb'),
        data_sample=result, draw_gt=False, pred_score_thr=0.3,
        out_file=out_file)


if __name__ == '__main__':
    main()
