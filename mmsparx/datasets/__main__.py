"""python -m mmsparx.datasets {coco,ade20k,imagenet} OUT_DIR [options]"""
import argparse

from .generate import generate_ade20k, generate_coco, generate_imagenet


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog='python -m mmsparx.datasets',
        description='Write a deterministic generated dataset.')
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
    generate = dict(coco=generate_coco, ade20k=generate_ade20k,
                    imagenet=generate_imagenet)[args.format]
    paths = generate(args.out_dir, **kwargs)
    for split, path in paths.items():
        print(f'{args.format} {split}: {path}')


if __name__ == '__main__':
    main()
