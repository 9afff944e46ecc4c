"""python -m mmsparx.datasets {coco,ade20k,imagenet} OUT_DIR [options]
python -m mmsparx.datasets preflight CONFIG [--cfg-options ...] [--splits ...]
python -m mmsparx.datasets check CONFIG [--cfg-options ...] [--splits ...]"""
import argparse
import sys

from mmsparx.datasets.generate import (generate_ade20k, generate_coco,
                                       generate_imagenet)

PROG = 'python -m mmsparx.datasets'


def _config_parser(command: str, description: str) -> argparse.ArgumentParser:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(prog=f'{PROG} {command}',
                                     description=description)
    parser.add_argument('config')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='the overrides the training command gets')
    parser.add_argument('--work-dir', help='accepted, not used')
    parser.add_argument('--splits', nargs='+', default=None,
                        choices=['train', 'val', 'test'],
                        help='dataloaders to check')
    return parser


def _load(args):
    from mmsparx.utils.cli import load_config
    return load_config(args.config, args.cfg_options, 'none', args.work_dir)


def preflight(argv) -> None:
    """Exit 2 with one paragraph when the data or the ImageNet weights of
    a config are missing; the launchers' other arguments are ignored."""
    from mmsparx.datasets.preflight import TRAIN_SPLITS, ensure_ready
    parser = _config_parser(
        'preflight', 'Check that the data and pretrained weights a config '
        'names exist (paths only; seconds). Exit status 2 when not.')
    args, _ = parser.parse_known_args(argv)
    splits = args.splits or TRAIN_SPLITS
    ensure_ready(_load(args), args.config, splits,
                 weights='train' in splits)
    print(f'preflight: {args.config}: data ({", ".join(splits)}) and '
          f'weights found.')


def check(argv) -> None:
    """Decode every image and judge every annotation; print a table;
    exit 1 when anything is wrong."""
    from mmsparx.datasets.annotations import REPAIRED
    from mmsparx.datasets.check import check_config, format_table
    parser = _config_parser(
        'check', 'Full check of the datasets of a config: counts, missing '
        'and broken images, bad boxes, unknown categories. Exit status 1 '
        'when an image is broken or an annotation would be dropped '
        '(clipped boxes are listed only).')
    parser.add_argument('--examples', type=int, default=5,
                        help='names listed per problem (5)')
    args = parser.parse_args(argv)
    reports = check_config(_load(args), args.splits or ('train', 'val',
                                                        'test'))
    print(format_table(reports, args.examples))
    # Clipped boxes are repairs (training keeps them): listed, not failed.
    if any(n for r in reports for p, n in r.counts.items()
           if p not in REPAIRED):
        raise SystemExit(1)


def generate(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description='Write a deterministic generated dataset (or: '
        f'{PROG} preflight|check CONFIG, see their --help).')
    parser.add_argument('format', choices=['coco', 'ade20k', 'imagenet'])
    parser.add_argument('out_dir')
    parser.add_argument('--num-train', type=int, default=None,
                        help='images (coco, ade20k) or images per class '
                        '(imagenet) in the train split')
    parser.add_argument('--num-val', type=int, default=None)
    parser.add_argument('--size', type=int, nargs=2, metavar=('H', 'W'),
                        default=None)
    parser.add_argument('--num-classes', type=int, default=None,
                        help='ade20k: 1..150 (150); imagenet: any (10)')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    kwargs = dict(seed=args.seed)
    if args.size:
        kwargs['size'] = tuple(args.size)
    if args.num_classes is not None:
        if args.format == 'coco':
            parser.error('coco has its three shape categories; drop '
                         '--num-classes')
        kwargs['num_classes'] = args.num_classes
    if args.format == 'imagenet':
        names = ('train_per_class', 'val_per_class')
    else:
        names = ('num_train', 'num_val')
    for name, value in zip(names, (args.num_train, args.num_val)):
        if value is not None:
            kwargs[name] = value
    write = dict(coco=generate_coco, ade20k=generate_ade20k,
                 imagenet=generate_imagenet)[args.format]
    paths = write(args.out_dir, **kwargs)
    for split, path in paths.items():
        print(f'{args.format} {split}: {path}')


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    commands = dict(preflight=preflight, check=check)
    if argv and argv[0] in commands:
        commands[argv[0]](argv[1:])
    else:
        generate(argv)


if __name__ == '__main__':
    main()
